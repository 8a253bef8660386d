"""The base every room stands on: errors, events, the announcement, PCM constants, backoff,
logging and systemd notification. Imports nothing else of edgespeak."""
