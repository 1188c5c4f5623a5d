# HopGate: nginx module, agent, tunnel engine, tests.
#
#   make            build everything (module .so, agent, unit tests)
#   make test       build, then run the whole suite: prove -r t/
#   make asan       the engine and its unit tests with ASan + UBSan
#   make test-asan  run the C unit tests from the sanitizer build
#   make asan-module  the nginx module with ASan + UBSan, and a wrapper
#                   that runs nginx with libasan preloaded (t/asan-module.t)
#   make demo       a private nginx + local app + agent, one request through
#                   (DEMO_KEEP=1 leaves it running; make demo-stop)
#   make install    the module to /usr/lib/nginx/modules (enabled in
#                   /etc/nginx/modules-enabled), the agent, its man page
#                   and systemd unit under PREFIX (/usr/local; DESTDIR,
#                   PREFIX, MODULE_DIR, ENABLE_MODULE=0)
#   make deb        build/deb/*.deb: libnginx-mod-http-hopgate, hopgate-agent
#   make clean

BUILD      ?= build
CC         ?= cc
PROTOC_C   ?= protoc-c
NGINX_SRC  ?= /usr/share/nginx/src
NGINX_BIN  ?= /usr/sbin/nginx

WARN       := -Wall -Wextra -Werror
OPT        ?= -O2 -g
CFLAGS_ALL := -std=gnu11 $(OPT) $(WARN) -fPIC -D_GNU_SOURCE \
              -Iproto -I$(BUILD)/gen $(EXTRA_CFLAGS)
LIBS       := -lprotobuf-c -lssl -lcrypto
AGENT_LIBS := $(LIBS) -lcurl

GEN        := $(BUILD)/gen/hopgate.pb-c.c $(BUILD)/gen/hopgate.pb-c.h
PROTO_SRCS := $(wildcard proto/*.c)
PROTO_OBJS := $(PROTO_SRCS:proto/%.c=$(BUILD)/proto/%.o) \
              $(BUILD)/proto/hopgate.pb-c.o
PROTO_LIB  := $(BUILD)/libhgproto.a

AGENT_SRCS := $(wildcard agent/*.c)
AGENT_OBJS := $(AGENT_SRCS:agent/%.c=$(BUILD)/agent/%.o)
AGENT      := $(BUILD)/hopgate-agent

# t/unit/test_*.c are TAP programs; the other .c files there are shared
# test support (the simulator) linked into each of them.
UNIT_MAINS := $(wildcard t/unit/test_*.c)
UNIT_SUPP  := $(filter-out $(UNIT_MAINS),$(wildcard t/unit/*.c))
UNIT_SOBJS := $(UNIT_SUPP:t/unit/%.c=$(BUILD)/unit/%.o)
UNIT_BINS  := $(UNIT_MAINS:t/unit/%.c=$(BUILD)/unit/%)

MODULE_SRCS := $(wildcard ngx_hopgate_module/*.c ngx_hopgate_module/*.h) \
               $(PROTO_SRCS) $(wildcard proto/*.h) proto/hopgate.proto config
MODULE     := $(BUILD)/modules/ngx_http_hopgate_module.so

.SECONDARY:

.PHONY: all deps module agent unit test asan test-asan demo clean install \
        deb demo-stop \
        fuzz bench fuzz-run fuzz-corpus bench-engine asan-module

all: deps module agent unit tools

deps:
	@./scripts/install-deps

# --- generated protobuf code (built, not committed) ---------------------

$(GEN): proto/hopgate.proto
	@mkdir -p $(BUILD)/gen
	$(PROTOC_C) --proto_path=proto --c_out=$(BUILD)/gen proto/hopgate.proto

# --- the engine library -----------------------------------------------------

$(BUILD)/proto/hopgate.pb-c.o: $(BUILD)/gen/hopgate.pb-c.c $(GEN)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(BUILD)/proto/%.o: proto/%.c $(wildcard proto/*.h) $(GEN)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(PROTO_LIB): $(PROTO_OBJS)
	@rm -f $@
	ar rcs $@ $^

# --- the agent --------------------------------------------------------------

agent: $(AGENT)

$(BUILD)/agent/%.o: agent/%.c $(wildcard agent/*.h) $(wildcard proto/*.h) $(GEN)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Iagent -c -o $@ $<

$(AGENT): $(AGENT_OBJS) $(PROTO_LIB)
	$(CC) -o $@ $(AGENT_OBJS) $(PROTO_LIB) $(AGENT_LIBS) $(LDFLAGS)

# --- C unit tests -------------------------------------------------------------

unit: $(UNIT_BINS)

$(BUILD)/unit/%.o: t/unit/%.c $(wildcard t/unit/*.h) $(wildcard proto/*.h) $(GEN)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -It/unit -c -o $@ $<

$(BUILD)/unit/test_%: $(BUILD)/unit/test_%.o $(UNIT_SOBJS) $(PROTO_LIB)
	$(CC) -o $@ $< $(UNIT_SOBJS) $(PROTO_LIB) $(LIBS) $(LDFLAGS) \
	    $(UNIT_LDFLAGS) -lm

# test_events injects allocation failures into the engine it links
$(BUILD)/unit/test_events: UNIT_LDFLAGS = \
    -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc

# --- the nginx module -----------------------------------------------------------

module: $(MODULE)

$(MODULE): $(MODULE_SRCS)
	NGINX_SRC=$(NGINX_SRC) ./scripts/build-module $(BUILD)

# --- tests ----------------------------------------------------------------------

# Our Test::Nginx::Socket subset goes on the Perl path only when the real
# one is not installed.
TEST_ENV = TEST_NGINX_BINARY=$(NGINX_BIN) \
           TEST_NGINX_LOAD_MODULES=$(abspath $(MODULE)) \
           TEST_NGINX_HOPGATE_PORT=$${TEST_NGINX_HOPGATE_PORT:-1986} \
           HOPGATE_BUILD=$(abspath $(BUILD))

test: all
	@if perl -MTest::Nginx::Socket -e1 2>/dev/null; then :; else \
	    export PERL5LIB=$(abspath t/compat/lib)$${PERL5LIB:+:$$PERL5LIB}; fi; \
	$(TEST_ENV) prove -r $(PROVE_FLAGS) t/

asan:
	$(MAKE) BUILD=$(BUILD)/asan OPT="-O1 -g -fno-omit-frame-pointer" \
	    EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all" \
	    LDFLAGS="-fsanitize=address,undefined" unit agent

test-asan: asan
	HOPGATE_UNIT_DIR=$(abspath $(BUILD)/asan/unit) \
	    prove $(PROVE_FLAGS) t/unit/

# The module built with ASan + UBSan, for Debian's (uninstrumented) nginx:
# $(ASAN_NGINX) runs it with the gcc's libasan preloaded, which must come
# first in the process. Its ASAN_OPTIONS default to reports in
# $(ASAN_MODULE_DIR)/reports/; set them to override. nodelete keeps the
# module mapped after nginx unloads it, so leaks found at exit have names.
ASAN_MODULE_DIR := $(BUILD)/asan-module
ASAN_MODULE     := $(ASAN_MODULE_DIR)/modules/ngx_http_hopgate_module.so
ASAN_NGINX      := $(ASAN_MODULE_DIR)/nginx-asan
ASAN_MODULE_CC  := $(CC) -fsanitize=address,undefined -fno-omit-frame-pointer \
                   -Wl,-z,nodelete

asan-module: $(ASAN_MODULE) $(ASAN_NGINX)

$(ASAN_MODULE): $(MODULE_SRCS)
	NGINX_SRC=$(NGINX_SRC) MODULE_CC="$(ASAN_MODULE_CC)" \
	    ./scripts/build-module $(ASAN_MODULE_DIR)

$(ASAN_NGINX): Makefile
	@mkdir -p $(dir $@)
	@libasan=$$($(CC) -print-file-name=libasan.so); \
	reports=$(abspath $(ASAN_MODULE_DIR))/reports; \
	printf '%s\n' '#!/bin/sh' \
	    '# nginx with the sanitizer runtime the asan module needs; UBSan' \
	    '# reports to stderr, which nginx makes its error log' \
	    "mkdir -p $$reports" \
	    "export LD_PRELOAD=$$libasan\$${LD_PRELOAD:+:\$$LD_PRELOAD}" \
	    "export ASAN_OPTIONS=\$${ASAN_OPTIONS:-log_path=$$reports/asan}" \
	    'exec $(NGINX_BIN) "$$@"' >$@.tmp
	@chmod +x $@.tmp && mv -f $@.tmp $@

demo: all
	./scripts/demo

demo-stop:
	./scripts/demo stop

# --- fuzzing: clang, libFuzzer, ASan + UBSan ---------------------------------
#
#   make fuzz         build $(BUILD)/fuzz/fuzz_datagram
#   make fuzz-run     fuzz for FUZZ_SECONDS from fuzz/corpus; new inputs go
#                     to $(BUILD)/fuzz/corpus, crashes to $(BUILD)/fuzz/
#   make fuzz-corpus  (re)write the generated seeds in fuzz/corpus

FUZZ_CC      ?= clang-14
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := $(BUILD)/fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS  := -std=gnu11 -O1 -g -fno-omit-frame-pointer $(WARN) \
                -D_GNU_SOURCE -Iproto -I$(BUILD)/gen -It/unit -Ifuzz \
                $(FUZZ_SAN) -fsanitize=fuzzer-no-link
FUZZ_SRCS    := $(wildcard fuzz/*.c)
FUZZ_OBJS    := $(PROTO_SRCS:proto/%.c=$(FUZZ_BUILD)/proto/%.o) \
                $(FUZZ_BUILD)/proto/hopgate.pb-c.o \
                $(FUZZ_BUILD)/unit/testcert.o \
                $(FUZZ_BUILD)/unit/codec_diff.o \
                $(FUZZ_SRCS:fuzz/%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_BIN     := $(FUZZ_BUILD)/fuzz_datagram

fuzz: $(FUZZ_BIN)

$(FUZZ_BUILD)/proto/hopgate.pb-c.o: $(BUILD)/gen/hopgate.pb-c.c $(GEN)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_BUILD)/proto/%.o: proto/%.c $(wildcard proto/*.h) $(GEN)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_BUILD)/unit/%.o: t/unit/%.c $(wildcard t/unit/*.h) \
                        $(wildcard proto/*.h) $(GEN)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_BUILD)/obj/%.o: fuzz/%.c $(wildcard fuzz/*.h) $(wildcard proto/*.h) \
                       $(GEN)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_BIN): $(FUZZ_OBJS)
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $(FUZZ_OBJS) $(LIBS)

fuzz-run: $(FUZZ_BIN)
	@mkdir -p $(FUZZ_BUILD)/corpus
	$(FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_BUILD)/ $(FUZZ_BUILD)/corpus fuzz/corpus

fuzz-corpus: $(FUZZ_BIN)
	@mkdir -p fuzz/corpus
	HG_FUZZ_CORPUS=fuzz/corpus $(FUZZ_BIN)

# --- engine benchmark ---------------------------------------------------------
#
#   make bench-engine [BENCH_ARGS="268435456"]   bytes per run

BENCH_BIN  := $(BUILD)/bench/engine_bench
BENCH_ARGS ?=

bench-engine: $(BENCH_BIN)
	$(BENCH_BIN) $(BENCH_ARGS)

$(BENCH_BIN): bench/engine_bench.c t/unit/testcert.c t/unit/testcert.h \
              $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -O2 -It/unit -o $@ bench/engine_bench.c \
	    t/unit/testcert.c $(PROTO_LIB) $(LIBS)

# --- tunnel vs direct benchmark ---------------------------------------------------
#
#   make bench-tunnel    one nginx: direct proxy_pass vs the tunnel (wrk, curl),
#                        worker RSS per idle session; knobs in bench/tunnel_bench

.PHONY: bench-tunnel

SESSION_GEN := $(BUILD)/bench/session_gen

bench-tunnel: deps module agent $(SESSION_GEN)
	@command -v wrk >/dev/null || apt-get install -y wrk
	BUILD=$(abspath $(BUILD)) NGINX_BIN=$(NGINX_BIN) ./bench/tunnel_bench

# built with everything: the tests drive sessions with it
.PHONY: tools
tools: $(SESSION_GEN)

$(SESSION_GEN): bench/session_gen.c $(wildcard proto/*.h) $(GEN) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ bench/session_gen.c $(PROTO_LIB) $(LIBS)

# --- install ------------------------------------------------------------------
#
# As Debian's libnginx-mod-* packages lay it out: the module in nginx's
# module directory, its load_module snippet in modules-available and (for
# a plain `make install`; packages do it in postinst) the link that
# enables it in /etc/nginx/modules-enabled. The agent, its man page, the
# systemd unit and the example configuration follow PREFIX. install(1)
# replaces files by a new inode, so a running nginx is safe.

PREFIX        ?= /usr/local
BINDIR        ?= $(PREFIX)/bin
MANDIR        ?= $(PREFIX)/share/man
DOCDIR        ?= $(PREFIX)/share/doc/hopgate
MODULE_DIR    ?= /usr/lib/nginx/modules
NGINX_MODCONF ?= /usr/share/nginx/modules-available
NGINX_ENABLED ?= /etc/nginx/modules-enabled
ENABLE_MODULE ?= 1
# bookworm's units live in /lib; /usr/local/lib/systemd/system is searched too
UNIT_DIR      ?= $(if $(filter /usr,$(PREFIX)),/lib,$(PREFIX)/lib)/systemd/system

MODCONF   := mod-http-hopgate.conf
MANPAGE   := $(BUILD)/dist/hopgate-agent.1

.PHONY: dist
dist: $(MANPAGE)

# from --help, plus the sections --help has no room for
$(MANPAGE): $(AGENT) dist/hopgate-agent.h2m
	@mkdir -p $(dir $@)
	help2man --no-info --section=1 --include=dist/hopgate-agent.h2m \
	    --name="serve a domain's requests from a HopGate edge" \
	    --output=$@ $(AGENT)

install: module agent dist
	install -D -m 0644 $(MODULE) $(DESTDIR)$(MODULE_DIR)/ngx_http_hopgate_module.so
	install -D -m 0644 dist/$(MODCONF) $(DESTDIR)$(NGINX_MODCONF)/$(MODCONF)
	if [ "$(ENABLE_MODULE)" = 1 ]; then \
	    install -d $(DESTDIR)$(NGINX_ENABLED); \
	    ln -sfn $(NGINX_MODCONF)/$(MODCONF) \
	        $(DESTDIR)$(NGINX_ENABLED)/50-$(MODCONF); \
	fi
	install -D -m 0755 $(AGENT) $(DESTDIR)$(BINDIR)/hopgate-agent
	install -D -m 0644 $(MANPAGE) $(DESTDIR)$(MANDIR)/man1/hopgate-agent.1
	# the unit names the agent where this install puts it
	install -d $(DESTDIR)$(UNIT_DIR)
	sed 's|@BINDIR@|$(BINDIR)|g' dist/hopgate-agent@.service.in \
	    > $(DESTDIR)$(UNIT_DIR)/hopgate-agent@.service
	chmod 0644 $(DESTDIR)$(UNIT_DIR)/hopgate-agent@.service
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -m 0644 docs/*.md $(DESTDIR)$(DOCDIR)/
	install -d $(DESTDIR)$(DOCDIR)/examples
	install -m 0644 examples/* $(DESTDIR)$(DOCDIR)/examples/

# --- Debian packages ----------------------------------------------------------
#
#   make deb    build/deb/libnginx-mod-http-hopgate_*.deb, hopgate-agent_*.deb
#
# dpkg-buildpackage runs in a copy of the tree (the files git knows, or
# everything but build/ outside a checkout), so its products land in
# build/deb and never in the directory above the tree.

DEB_DIR := $(BUILD)/deb

.PHONY: deb lintian
deb:
	rm -rf $(DEB_DIR)
	mkdir -p $(DEB_DIR)/src
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	    git ls-files -z --cached --others --exclude-standard \
	        | xargs -0 sh -c 'for f; do [ -e "$$f" ] && printf "%s\0" "$$f"; done' sh \
	        | tar --null -T - -cf - | tar -C $(DEB_DIR)/src -xf -; \
	else \
	    tar --exclude=./build --exclude=./demo-run -cf - . \
	        | tar -C $(DEB_DIR)/src -xf -; \
	fi
	cd $(DEB_DIR)/src && dpkg-buildpackage -b -us -uc -jauto
	rm -rf $(DEB_DIR)/src
	@ls -l $(DEB_DIR)/*.deb

# lintian's verdict on the packages (make deb first)
lintian:
	lintian --info --display-info $(DEB_DIR)/*.changes

clean:
	rm -rf $(BUILD) t/servroot
