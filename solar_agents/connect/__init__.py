"""How the service connects: the Kafka client options (``kafka``), what a refused connection means for the
user (``explain``) and the check at start of every command and worker (``preflight``)."""
