# lxdocker — see README.md. `make run` converts the bundled sample and serves it,
# `make test` runs every check CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the converter, the server and the tests use (the real parts, no mocks).
# nginx serves the --publish-to directory target in tests; crun, runc and the build tools of OpenWrt's uxc (tests/uxc/build.sh) run the OCI bundles; dash and shellcheck run and check lxdocker-lxc-update.
DEB_PACKAGES := squashfs-tools-ng busybox-static xz-utils umoci skopeo docker-registry \
	apache2-utils lxd lxd-client iproute2 util-linux systemd lxc wget qemu-user-static xdelta3 \
	crun runc build-essential cmake pkg-config libjson-c-dev nginx dash shellcheck
# Incus 6.0 is in bookworm-backports (incus-base: the container-only daemon).
BACKPORTS_DEB_PACKAGES := incus-base incus-client
# Only `make bench` needs these (load generator, reference server, GNU time, mksquashfs).
BENCH_DEB_PACKAGES := wrk nginx time squashfs-tools

.PHONY: setup deps venv test lint typecheck unit fuzz run bench clean

setup: deps venv

# Install only what is missing, so repeated runs cost nothing and need no network.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	bpmissing=""; for p in $(BACKPORTS_DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || bpmissing="$$bpmissing $$p"; \
	done; \
	if [ -n "$$missing$$bpmissing" ]; then \
		echo "installing Debian packages:$$missing$$bpmissing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		if [ -n "$$bpmissing" ]; then $$SUDO bash scripts/enable-backports.sh; fi; \
		$$SUDO apt-get update -q && \
		if [ -n "$$missing" ]; then DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; fi && \
		if [ -n "$$bpmissing" ]; then DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q -t bookworm-backports $$bpmissing; fi; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

LINT_PATHS := lxdocker imgserver lxdupdate tests $(wildcard bench)
lint: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

typecheck: venv
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q -ra

test: setup lint typecheck unit

# The differential test of the flattener against `umoci unpack` with fresh random
# stacks (CI runs a fixed set of 300); prints how many stacks matched umoci. Takes
# about 8 minutes for 3000 on a busy 2-core machine, hence no per-test timeout.
FUZZ_EXAMPLES ?= 3000
fuzz: setup
	FUZZ_RANDOM=1 FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -s -p no:cacheprovider --timeout=0 \
		tests/test_umoci_equivalence.py -k random_stacks

# The bundled sample, end to end and offline: build a small app image (from this
# host's static busybox) as an OCI layout, convert specs/, make a CA and certificate
# once (a run/tls from before the CA: its self-signed server.crt becomes the CA), then serve on https://127.0.0.1:8443 (imgserver prints the lxc commands to use).
RUN_DIR := run
run: setup
	bash specs/sample/build-hello.sh specs/sample/hello
	$(BIN)/lxdocker --cache $(RUN_DIR)/cache --lxdimages $(RUN_DIR)/images --specs specs
	test -f $(RUN_DIR)/tls/ca.crt || \
		{ test -f $(RUN_DIR)/tls/server.crt && $(BIN)/imgserver gencert --renew --out $(RUN_DIR)/tls; } || \
		$(BIN)/imgserver gencert --out $(RUN_DIR)/tls --san localhost --san 127.0.0.1
	exec $(BIN)/imgserver --address 127.0.0.1:8443 --lxdimages $(RUN_DIR)/images \
		--cert $(RUN_DIR)/tls/server.crt --key $(RUN_DIR)/tls/server.key --remote-name lxdocker

# Benchmarks print figures and write bench/RESULTS.md (BENCH_QUICK=1: smoke run).
bench: setup
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(BENCH_DEB_PACKAGES)"
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
