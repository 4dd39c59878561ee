"""Built-in isolators, registered under the ``mesos_secrets.isolators`` entry points."""
