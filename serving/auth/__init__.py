"""Who may call: the master key and device tokens (JWTs, tokens.py), checked in one place that every route calls
(credentials.py), with their keys read and re-read from a file or Secrets Manager (apikey.py, sources.py).
May import serving.core only."""
