"""The run configuration: every flag with its role and run-name part (``flags``, ``registry``), the value types
(``types``), the defaults (``defaults``), the checks across flags (``validation``), run names and the config hash
(``naming``), Time-Series-Library names (``tsl``) and configuration files (``files``).

Imports point down only: ``run`` -> ``exp`` -> ``config`` -> ``models``, ``data_provider``, ``utils``.
"""
