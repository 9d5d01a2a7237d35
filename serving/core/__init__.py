"""Ground floor shared by every layer: settings (flags and SERVING_* variables), errors, JSON logging, prompt text
rules and image encode/decode. Imports nothing from serving outside this package."""
