"""What runs on a host: the worker process, the ``dorch up`` supervisor, and the agent's sandbox."""
