# walredo: a library of PostgreSQL 15 wal-redo processes, with a C ABI.
#
#   make              build the library and the pg_walredo extension
#   make check        build everything and run every test (Rust, C, ASan, valgrind)
#   make demo         rebuild every page a real workload touched; compare with PostgreSQL
#   make header       regenerate include/walredo.h (pinned cbindgen)
#   make install      install header, libraries, walredo.pc (PREFIX=/usr/local)
#                     and the extension into PostgreSQL 15's directories

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
CARGO ?= cargo
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
export PG_CONFIG

.PHONY: all deps build extension check lint header header-check test c-tests \
	pkgconfig-test demo install install-lib clean

all: build

deps:
	@scripts/ensure-deps.sh

build: deps extension
	$(CARGO) build --release --bins

extension: deps
	$(MAKE) -C pg_walredo PG_CONFIG=$(PG_CONFIG)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings

header:
	$(CARGO) run --release --example gen_header -- write

header-check:
	$(CARGO) run --release --example gen_header -- check

test: build
	$(CARGO) test --release -- --nocapture --test-threads=1

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

check: build lint header-check test c-tests pkgconfig-test

# WORKLOAD=file.sql replaces the SQL part of the workload; DEMO_CONF='k=v ...'
# adds server settings (see scripts/demo.sh).
demo: build
	$(CARGO) build --release --example demo
	WORKLOAD="$(WORKLOAD)" DEMO_CONF="$(DEMO_CONF)" scripts/demo.sh

install-lib: build
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 include/walredo.h $(DESTDIR)$(INCLUDEDIR)/walredo.h
	install -m 755 target/release/libwalredo.so $(DESTDIR)$(LIBDIR)/libwalredo.so
	install -m 644 target/release/libwalredo.a $(DESTDIR)$(LIBDIR)/libwalredo.a
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    walredo.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/walredo.pc

install: install-lib
	$(MAKE) -C pg_walredo PG_CONFIG=$(PG_CONFIG) install

clean:
	$(CARGO) clean
	$(MAKE) -C pg_walredo PG_CONFIG=$(PG_CONFIG) clean
