"""The configuration: one YAML file in, one frozen model out.

schema (every key, declared once) · yamlsrc (YAML with line numbers) · fields (typed values
out of one mapping, problems collected) · reader (the sections and their cross-checks,
every problem at once) · model (the frozen settings) · reference (docs/config-reference.md).
May import: the base modules (offsite.errors, offsite.unitnames, offsite.quantities, ...).
"""
