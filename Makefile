# walredo: a library of PostgreSQL 15 wal-redo processes, with a C ABI.
#
#   make          build the library and the pg_walredo extension
#   make check    build everything and run every test
#   make demo     rebuild every page a real workload touched; compare with PostgreSQL
#   make install  install the pg_walredo extension into PostgreSQL 15 (as root)

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
CARGO ?= cargo
export PG_CONFIG

.PHONY: all deps build extension check lint test demo install clean

all: build

deps:
	@scripts/ensure-deps.sh

build: deps extension
	$(CARGO) build --release

extension: deps
	$(MAKE) -C pg_walredo PG_CONFIG=$(PG_CONFIG)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings

test: build
	$(CARGO) test --release -- --nocapture --test-threads=1

check: build lint test

demo: build
	$(CARGO) test --release --test real_wal -- --nocapture

install: extension
	$(MAKE) -C pg_walredo PG_CONFIG=$(PG_CONFIG) install

clean:
	$(CARGO) clean
	$(MAKE) -C pg_walredo PG_CONFIG=$(PG_CONFIG) clean
