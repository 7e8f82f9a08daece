# The two commands of the README: `make demo` and `make test`. Both set up what they need.
VENV := .venv/bin

.PHONY: setup demo test lint unit system bench
setup:
	@./scripts/setup

demo: setup
	$(VENV)/offsite demo

# ruff and mypy are part of the tests; a pytest run that collects nothing (exit 5) fails.
test: setup lint
	$(VENV)/pytest

lint: setup
	$(VENV)/ruff check src tests bench
	$(VENV)/mypy

unit: setup
	$(VENV)/pytest tests/unit

system: setup
	$(VENV)/pytest tests/system

# Benchmarks print figures against anchors measured in the same run (needs root).
bench: setup
	$(VENV)/python bench/install_scale.py
	$(VENV)/python bench/plug_latency.py
	$(VENV)/python bench/mirror_copy.py
	$(VENV)/python bench/agent.py
