# The two commands of the README: `make demo` and `make test`. Both set up what they need.
VENV := .venv/bin

.PHONY: setup demo test lint unit system bench docs deb
setup:
	@./scripts/setup

demo: setup
	$(VENV)/offsite-lab demo

# ruff and mypy are part of the tests; a pytest run that collects nothing (exit 5) fails.
# Two workers: the system tier on one, one sandbox at a time; vm guests on both (tests/conftest.py).
test: setup lint
	$(VENV)/pytest -n 2 --dist loadgroup

lint: setup
	$(VENV)/ruff check src lab tests bench
	$(VENV)/mypy

unit: setup
	$(VENV)/pytest tests/unit

system: setup
	$(VENV)/pytest tests/system

# Every benchmark, then one table: each figure beside its anchor measured in the same run,
# the ratio and the goal (needs root; boots sandboxes).
bench: setup
	$(VENV)/python bench/all.py

# The configuration reference, generated from the schema (src/offsite/config/schema.py).
docs: setup
	$(VENV)/python -m offsite.config.reference > docs/config-reference.md
	$(VENV)/python -m offsite.agent.ledstate > docs/led-states.svg

# The Debian package, from packaging/ (installs dpkg-dev, lintian and build headers first);
# lintian must report no errors.
deb: setup
	packaging/build-deb dist
