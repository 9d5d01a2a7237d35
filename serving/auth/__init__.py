"""Who may call: the fleet's bearer key (apikey.py). May import serving.core only."""
