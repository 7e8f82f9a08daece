"""The configuration: one YAML file in, one frozen model out.

schema (every key, declared once) · yamlsrc (YAML with line numbers) · reader (validation,
every problem at once) · model (the frozen settings) · reference (docs/config-reference.md).
May import: the base modules (offsite.errors, offsite.names, offsite.quantities, ...).
"""
