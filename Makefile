# walredo: a library of PostgreSQL wal-redo processes (15 to 18), with a C ABI.
#
#   make              build the library, the walredo command and the extension
#   make PG_VERSION=N the same for PostgreSQL N (15, 16, 17, 18; default 15)
#   make check        build everything and run every test (Rust, C, ASan, valgrind)
#                     on 15, then the version tests on 17 and 18 (PG_VERSIONS)
#   make demo         rebuild every page a real workload touched; compare with PostgreSQL
#   make header       regenerate include/walredo.h (pinned cbindgen)
#   make fuzz-smoke   run every fuzz target briefly (FUZZ_SECONDS=20)
#   make bench        benchmark table (BENCHMARKS.md)
#   make profile      pg_walredo's request loop under callgrind
#   make install      install header, libraries, walredo.pc, the walredo command
#                     (PREFIX=/usr/local) and the extensions (pg_walredo,
#                     walredo_inspect) into PostgreSQL 15's directories
#   make inspect-test walredo_inspect's tests against throw-away clusters
#
# The cargo workspace: the library (src/), cli/ (the walredo command, the
# demo), testkit/ (test clusters, fixtures, a fake child; tests only),
# header/ (cbindgen, for make header).

SHELL := /bin/bash
# The PostgreSQL major version to build for (and demo, and test). 15 builds
# the extensions in their source directories; another version builds them in
# target/pgN/, with that version's PGXS: on this machine when its
# /usr/lib/postgresql/N is installed (the PostgreSQL project's packages),
# else inside the root scripts/pg-root.sh makes (17, 18; see "Versions").
PG_VERSION ?= 15
PG_CONFIG ?= /usr/lib/postgresql/$(PG_VERSION)/bin/pg_config
CARGO ?= cargo
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR ?= $(PREFIX)/bin
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
export PG_CONFIG

ifeq ($(PG_VERSION),15)
EXT_BUILD := pg_walredo
INSPECT_BUILD := walredo_inspect
else
EXT_BUILD := target/pg$(PG_VERSION)/pg_walredo
INSPECT_BUILD := target/pg$(PG_VERSION)/walredo_inspect
endif
# How to run a command with PostgreSQL $(PG_VERSION): here, or in its root.
ifneq ($(wildcard /usr/lib/postgresql/$(PG_VERSION)/bin/postgres),)
IN_PG :=
PG_ROOT_NEEDED :=
else
IN_PG := scripts/in-root.sh $(PG_VERSION)
PG_ROOT_NEEDED := pg-root
endif
# A version's extensions build in their own directories, from copies of the
# one source (cp -p keeps times, so make rebuilds only what changed; a VPATH
# build would find 15's in-tree objects and call them up to date).
ifeq ($(PG_VERSION),15)
EXT_MAKE = $(IN_PG) $(MAKE) --no-print-directory -C pg_walredo PG_CONFIG=$(PG_CONFIG)
INSPECT_MAKE = $(IN_PG) $(MAKE) --no-print-directory -C walredo_inspect PG_CONFIG=$(PG_CONFIG)
else
COPY_SOURCES = mkdir -p $(EXT_BUILD) $(INSPECT_BUILD) && \
	cp -p pg_walredo/Makefile pg_walredo/*.[ch] $(EXT_BUILD)/ && \
	cp -p walredo_inspect/Makefile walredo_inspect/*.[ch] walredo_inspect/*.sql \
	  walredo_inspect/*.control $(INSPECT_BUILD)/
EXT_MAKE = $(COPY_SOURCES) && $(IN_PG) $(MAKE) --no-print-directory -C $(EXT_BUILD) \
	PG_CONFIG=$(PG_CONFIG) ROOT=$(CURDIR)
INSPECT_MAKE = $(COPY_SOURCES) && $(IN_PG) $(MAKE) --no-print-directory -C $(INSPECT_BUILD) \
	PG_CONFIG=$(PG_CONFIG) ROOT=$(CURDIR)
endif

.PHONY: all deps build extension inspect-test check lint header header-check test c-tests \
	pkgconfig-test demo bench profile install install-lib fuzz-build fuzz-smoke clean \
	pg-root check-15 check-version check-demos

all: build

deps:
	@scripts/ensure-deps.sh

# Everything `make install` installs: the libraries (and the header, checked
# in), the walredo command, the extensions. walredo_inspect links the static
# library, so it comes after cargo.
build: deps extension
	$(CARGO) build --release -p walredo -p walredo-cli
	$(INSPECT_MAKE)

extension: deps $(PG_ROOT_NEEDED)
	$(EXT_MAKE)

# The root PostgreSQL $(PG_VERSION) runs in, made on first need.
pg-root:
	@scripts/pg-root.sh $(PG_VERSION) >/dev/null

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

header:
	$(CARGO) run --release -p walredo-header -- write

header-check:
	$(CARGO) run --release -p walredo-header -- check

# The fake child of the pool's failure tests is a program of the testkit.
test: build
	$(CARGO) build --release -p walredo-testkit --bins
	$(CARGO) test --release --workspace --exclude walredo-header -- --nocapture --test-threads=1

c-tests: build
	c_tests/run.sh

# Install into a scratch prefix and build a program with pkg-config.
pkgconfig-test: build
	rm -rf target/pkgconfig-test
	$(MAKE) --no-print-directory install-lib PREFIX=$(CURDIR)/target/pkgconfig-test/usr
	PKG_CONFIG_PATH=$(CURDIR)/target/pkgconfig-test/usr/lib/pkgconfig sh -c '\
	  gcc -Wall -Wextra -Werror -o target/pkgconfig-test/test_pkgconfig c_tests/test_pkgconfig.c \
	    $$(pkg-config --cflags --libs walredo) -Wl,-rpath,$(CURDIR)/target/pkgconfig-test/usr/lib && \
	  target/pkgconfig-test/test_pkgconfig && \
	  gcc -Wall -Wextra -Werror -o target/pkgconfig-test/test_pkgconfig_static c_tests/test_pkgconfig.c \
	    $$(pkg-config --cflags walredo) $$(pkg-config --variable=libdir walredo)/libwalredo.a \
	    -lpthread -ldl -lm && \
	  target/pkgconfig-test/test_pkgconfig_static'

# walredo_inspect inside real backends of throw-away clusters, each run from
# a private copy of the PostgreSQL installation with the extension in it
# (tests/inspect*.rs; `make test`, and so `make check`, runs it with the rest).
inspect-test: build
	$(CARGO) test --release -p walredo --test inspect --test inspect_lifetime --test inspect_errors -- --nocapture --test-threads=1

# Every version that can be had: 15 on this machine, 17 and 18 in their
# roots (made on first need; making and entering them needs root
# privileges), or on this machine where /usr/lib/postgresql/N is installed.
# PG_VERSIONS="15 17" narrows.
PG_VERSIONS ?= 15 17 18
check:
	@set -e; skipped=""; for v in $(PG_VERSIONS); do \
	  if [ "$$v" = 15 ]; then $(MAKE) --no-print-directory check-15; \
	  elif [ -x /usr/lib/postgresql/$$v/bin/postgres ] || [ "$$(id -u)" = 0 ]; then \
	    $(MAKE) --no-print-directory check-version PG_VERSION=$$v \
	      PG_CONFIG=/usr/lib/postgresql/$$v/bin/pg_config; \
	  else skipped="$$skipped $$v"; fi; \
	done; \
	if [ -n "$$skipped" ]; then \
	  echo "make check: skipped PostgreSQL$$skipped: their roots need root privileges; test them with:"; \
	  echo "    sudo make check PG_VERSIONS=\"$$(echo $$skipped)\""; \
	else echo "make check: tested PostgreSQL $(PG_VERSIONS)"; fi

check-15: build lint header-check test c-tests pkgconfig-test check-demos

# The tests that run PostgreSQL $(PG_VERSION)'s own server and redo, in its
# root (or on this machine when it is installed here): the Rust tests that
# start real servers (VERSION_TESTS), run through cargo's runner so that
# cargo builds here and the test programs run there; the C tests' real-page
# part; the demo's oracle for every access method, with defaults and with
# full_page_writes=off wal_compression=lz4.
VERSION_TESTS ?= real_wal sandbox inspect inspect_wal inspect_lifetime inspect_errors process wal_source wal_paths template
VERSION_DEMO_WORKLOAD ?= cli/demo/workload.sql
check-version: build
	$(CARGO) build --release -p walredo-testkit --bins
	WALREDO_PG_VERSION=$(PG_VERSION) CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$(IN_PG)" \
	  $(CARGO) test --release --no-fail-fast -p walredo $(foreach t,$(VERSION_TESTS),--test $(t)) \
	  -- --nocapture --test-threads=1
	WALREDO_PG_VERSION=$(PG_VERSION) C_TESTS_NO_LIB_BUILD=1 $(IN_PG) c_tests/run.sh
	$(MAKE) --no-print-directory check-demos

# The demo's oracle (every access method: cli/demo/workload.sql) on
# $(PG_VERSION), with defaults and with full_page_writes=off wal_compression=lz4.
check-demos:
	$(MAKE) --no-print-directory demo WORKLOAD=$(VERSION_DEMO_WORKLOAD) | tee target/demo-pg$(PG_VERSION).log
	grep -Eq '^verified: [0-9]+ pages, [0-9]+ identical, 0 different$$' target/demo-pg$(PG_VERSION).log
	$(MAKE) --no-print-directory demo WORKLOAD=$(VERSION_DEMO_WORKLOAD) \
	  DEMO_CONF='full_page_writes=off wal_compression=lz4' | tee target/demo-pg$(PG_VERSION)-lz4.log
	grep -Eq '^verified: [0-9]+ pages, [0-9]+ identical, 0 different$$' target/demo-pg$(PG_VERSION)-lz4.log

# Fuzz targets (fuzz/, cargo-fuzz layout) built with libFuzzer's coverage
# instrumentation on the stable toolchain; `cargo fuzz run TARGET` works too
# where a nightly toolchain is installed. fuzz-smoke runs each target for
# FUZZ_SECONDS from the corpus kept in fuzz/corpus (new finds go to
# target/fuzz-corpus, not into the repository).
FUZZ_SECONDS ?= 20
FUZZ_TARGETS := record_decode wal_reader request_args image_restore record_pages
FUZZ_RUSTFLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
	-Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares \
	--cfg fuzzing -Cdebug-assertions -Coverflow-checks
FUZZ_BIN := fuzz/target/x86_64-unknown-linux-gnu/release

fuzz-build: deps
	cd fuzz && RUSTFLAGS="$(FUZZ_RUSTFLAGS)" $(CARGO) build --release --target x86_64-unknown-linux-gnu

fuzz-smoke: fuzz-build
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/fuzz-corpus/$$t && \
	  $(FUZZ_BIN)/$$t -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -print_final_stats=1 \
	    target/fuzz-corpus/$$t fuzz/corpus/$$t 2>&1 | grep -E 'stat::number_of_executed_units|Done|ERROR|panicked' ; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done

# WORKLOAD=file.sql replaces the SQL part of the workload; DEMO_CONF='k=v ...'
# adds server settings (see cli/demo/demo.sh).
demo: build
	$(CARGO) build --release -p walredo-cli --example demo
	WALREDO_PG_VERSION=$(PG_VERSION) WORKLOAD="$(WORKLOAD)" DEMO_CONF="$(DEMO_CONF)" $(IN_PG) cli/demo/demo.sh

# Medians and ratios measured in one run (see BENCHMARKS.md); BENCH_ARGS=--quick
# for a shorter one.
bench: build
	$(CARGO) run --release -p walredo --example bench -- $(BENCH_ARGS)

# pg_walredo's request loop under callgrind: instructions per short redo and
# where they go (BENCHMARKS.md).
profile: build
	$(CARGO) run --release -p walredo --example bench -- --profile-child

install-lib: build
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 include/walredo.h $(DESTDIR)$(INCLUDEDIR)/walredo.h
	install -m 755 target/release/libwalredo.so $(DESTDIR)$(LIBDIR)/libwalredo.so
	install -m 644 target/release/libwalredo.a $(DESTDIR)$(LIBDIR)/libwalredo.a
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    walredo.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/walredo.pc

# `deps` (through build) also creates the walredo account that a root host's
# wal-redo processes run as (scripts/ensure-deps.sh).
install: install-lib
	install -d $(DESTDIR)$(BINDIR)
	install -m 755 target/release/walredo $(DESTDIR)$(BINDIR)/walredo
	$(EXT_MAKE) install
	$(INSPECT_MAKE) install

clean:
	$(CARGO) clean
	$(MAKE) -C pg_walredo PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config clean
	$(MAKE) -C walredo_inspect PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config clean
