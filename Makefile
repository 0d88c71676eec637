# Convenience targets; the scripts are the source of truth.
.PHONY: help setup test demo bench pytest sanity units integration lint molecule docsite clean

help:
	@echo "make setup        install Debian packages and the .venv (scripts/setup.sh)"
	@echo "make test         every test stage (scripts/test.sh)"
	@echo "make demo         the main job (scripts/demo.sh)"
	@echo "make bench        benchmarks (bench/run_bench.py)"
	@echo "make pytest       plain pytest stages (unit + interop)"
	@echo "make sanity       ansible-test sanity"
	@echo "make units        ansible-test units"
	@echo "make integration  ansible-test integration --local"
	@echo "make lint         changelog/docs lint and ansible-lint"
	@echo "make molecule     molecule scenarios on localhost"
	@echo "make docsite      the docs site in tests/output/docsite/build/html (scripts/build-docsite.sh)"
	@echo "make clean        remove test output and caches (keeps .venv)"

setup:
	./scripts/setup.sh

test:
	./scripts/test.sh

demo:
	./scripts/demo.sh

bench: setup
	@if [ -f bench/run_bench.py ]; then bash bench/setup.sh && .venv/bin/python bench/run_bench.py; \
	else echo "no benchmarks yet (bench/run_bench.py)"; exit 1; fi

pytest:
	./scripts/test.sh pytest

sanity:
	./scripts/test.sh sanity

units:
	./scripts/test.sh ansible-units

integration:
	./scripts/test.sh integration

lint:
	./scripts/test.sh changelog-docs ansible-lint

molecule:
	./scripts/test.sh molecule

docsite:
	./scripts/build-docsite.sh

clean:
	rm -rf tests/output .pytest_cache .hypothesis .ansible
