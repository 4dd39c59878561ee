"""Built-in secret resolvers, registered under the ``mesos_secrets.resolvers`` entry points.

- ``value``: Mesos' default resolver; VALUE secrets only.
- ``local``: the embedded encrypted store (the default).
"""
