# aifs: local cluster, tests and benchmarks.
#   make run     build, start one MDS and $(OSDS) OSDs on 127.0.0.1, mount at $(MNT);
#                MDS=3 starts three MDS processes, each shard replicated over them
#   make stop    unmount and stop everything `make run` / `make mount` started
#   make mount   mount one more client of the running local cluster at $(MNT)
#   make test    the whole test suite (FUSE tests need root and /dev/fuse)
#   make bench   benchmarks against the local disk, one table
#   make fuzz    random and mutated frames at the MDS and an OSD ($(FUZZ_FRAMES))
MNT ?= /mnt/ai
OSDS ?= 3
MDS ?= 1
DETACH ?= 0
PREFIX ?= /usr/local
SBINDIR ?= /sbin
UNITDIR ?= $(PREFIX)/lib/systemd/system
FUZZ_FRAMES ?= 10000000
export MNT OSDS MDS DETACH

CARGO ?= cargo
TEST_FEATURES = --features aifs-tests/fuse_tests

.PHONY: all build deps run stop mount test bench fuzz install clean

all: build

deps:
	@scripts/deps.sh

build:
	$(CARGO) build --release --bins

run: deps build
	@scripts/local-cluster.sh start

stop:
	@scripts/local-cluster.sh stop

mount: deps build
	@scripts/local-cluster.sh mount "$(MNT)"

test: deps
	$(CARGO) build --release --bins
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --release --workspace $(TEST_FEATURES) --no-fail-fast; \
	else \
		$(CARGO) test --release --workspace $(TEST_FEATURES) --no-fail-fast; \
	fi

bench: deps build
	@scripts/bench.sh

fuzz: deps
	$(CARGO) build --release -p aifs-tests --bin aifs-fuzz
	target/release/aifs-fuzz --frames $(FUZZ_FRAMES)

# The binaries, the helper mount(8) runs for type fuse.aifs (mount -t
# fuse.aifs, fstab) and the systemd units, told where the binaries are.
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR)
	install -m 0755 target/release/aifs-mds target/release/aifs-osd target/release/aifs-mount target/release/mdsctl $(DESTDIR)$(PREFIX)/bin/
	sed 's|@BINDIR@|$(PREFIX)/bin|' scripts/mount.fuse.aifs > $(DESTDIR)$(SBINDIR)/mount.fuse.aifs
	chmod 0755 $(DESTDIR)$(SBINDIR)/mount.fuse.aifs
	for u in scripts/systemd/*; do sed 's|@BINDIR@|$(PREFIX)/bin|' $$u > $(DESTDIR)$(UNITDIR)/$$(basename $$u); done

clean:
	$(CARGO) clean
