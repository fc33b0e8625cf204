"""The fleet: what each regional cluster is and how loaded it is, from its heartbeats.

``model`` holds the plain domain types (no protobuf); ``registry`` the ``ClusterRegistry``
protocol and the report checks both backends share; ``memory`` and ``redis_registry`` the
two backends; ``hub`` the in-process fan-out of directives to connected agent streams.
"""
