# remora: one GNU Makefile, out-of-tree build.
#
#   make            build build/remora, build/remora-xds, build/remora-certs and the test upstream
#   make test       deps, then unit + integration tests, plain and under ASan+UBSan
#   make demo       deps, build, run the demo (Ctrl-C stops it)
#   make bench      deps (with peers), run the load benchmark
#   make bench-micro  build and run the micro-benchmarks (ns/op), write bench/micro/results.md
#
# Switches: V=1 (echo commands), SAN=1 (ASan+UBSan, in build/san), DEBUG=1 (-O0, in build/debug),
# O=dir (another build tree).
# Sources are found by wildcard: a new .c under proxy/<mod>/, filters/<name>/, certs/ or xds/
# is picked up without editing this file. Generated code (protoc-c output, llhttp's C sources from
# Debian's node-llhttp) goes to $(O)/gen and is never committed.

# O names the build tree (default build/); SAN=1 and DEBUG=1 build under $(O)/san and $(O)/debug,
# so several trees (O=build/mine) can coexist.
O ?= build
ifeq ($(SAN),1)
override O := $(O)/san
endif
ifeq ($(DEBUG),1)
override O := $(O)/debug
endif

CC ?= cc
Q := @
ifeq ($(V),1)
Q :=
endif

PKGS := libnghttp2 libprotobuf-c jansson yaml-0.1 libpcre2-8 openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# libev ships no .pc file on Debian.
LIBS := $(PKG_LIBS) -lev -lpthread -lm

OPT := -O2
ifeq ($(DEBUG),1)
OPT := -O0
endif
SANFLAGS :=
ifeq ($(SAN),1)
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT := -O1
endif

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla -Wformat=2
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -g $(OPT) $(SANFLAGS) -MMD -MP \
	-I. -I$(O)/gen -I/usr/share/include/llhttp $(PKG_CFLAGS)
CFLAGS_ALL := $(BASE_CFLAGS) $(WARN) $(EXTRA_CFLAGS)
GEN_CFLAGS := $(BASE_CFLAGS) -w
LDFLAGS_ALL := $(SANFLAGS) $(LDFLAGS)

# ---- sources ---------------------------------------------------------------------------------
PROTOS := $(shell find xds/proto -name '*.proto' 2>/dev/null | sort)
PROTO_C := $(patsubst xds/proto/%.proto,$(O)/gen/%.pb-c.c,$(PROTOS))
PROTO_H := $(PROTO_C:.c=.h)
LLHTTP_C := $(O)/gen/llhttp/llhttp.c $(O)/gen/llhttp/api.c $(O)/gen/llhttp/http.c

LIB_SRCS := $(sort $(filter-out proxy/main.c,$(wildcard proxy/*.c)) $(wildcard proxy/*/*.c filters/*.c filters/*/*.c certs/*.c xds/common/*.c \
	xds/client/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(O)/obj/%.o) $(PROTO_C:$(O)/gen/%.c=$(O)/obj/gen/%.o) \
	$(LLHTTP_C:$(O)/gen/%.c=$(O)/obj/gen/%.o)
LIB := $(O)/libremora.a

# remora-xds (the control plane): its own library, so the proxy never links SQLite.
XDS_SRCS := $(sort $(wildcard xds/appmesh/*.c) \
	$(filter-out xds/server/main.c,$(wildcard xds/server/*.c)))
XDS_OBJS := $(XDS_SRCS:%.c=$(O)/obj/%.o)
XDS_LIB := $(O)/libremora-xds.a
XDS_LIBS := -lsqlite3

UPSTREAM_SRCS := $(wildcard tests/upstream/*.c)
UNIT_SRCS := $(shell find tests/unit -name '*_test.c' 2>/dev/null | sort)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%_test.c=$(O)/tests/unit/%_test)

ALL_BINS := $(O)/remora $(O)/remora-test-upstream $(O)/remora-xds $(O)/remora-certs

.PHONY: fuzz fuzz-replay fuzz-run all deps deps-bench test test-build test-unit test-integration test-san demo bench \
	bench-quick bench-micro fmt fmt-check check-headers clean
.DEFAULT_GOAL := all
# Generated sources are kept (make would otherwise delete them as intermediates).
.SECONDARY: $(LLHTTP_C) $(PROTO_C) $(PROTO_H)

all: $(ALL_BINS)

deps:
	$(Q)scripts/deps.sh

deps-bench:
	$(Q)scripts/deps.sh --bench

# ---- generated code --------------------------------------------------------------------------
$(O)/gen/%.pb-c.c $(O)/gen/%.pb-c.h: xds/proto/%.proto $(PROTOS)
	@mkdir -p $(O)/gen
	$(Q)protoc-c --proto_path=xds/proto --c_out=$(O)/gen $<

$(O)/gen/llhttp/%.c: /usr/share/llhttp/%.c
	@mkdir -p $(dir $@)
	$(Q)cp $< $@

# Every project object may include generated protobuf headers: make them first.
$(LIB_SRCS:%.c=$(O)/obj/%.o) $(XDS_OBJS) $(UNIT_BINS) $(O)/obj/proxy/main.o $(O)/obj/certs/cli/main.o: | $(PROTO_H)

$(O)/obj/gen/%.o: $(O)/gen/%.c
	@mkdir -p $(dir $@)
	@echo "  CC(gen) $<"
	$(Q)$(CC) $(GEN_CFLAGS) -c $< -o $@

$(O)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC $<"
	$(Q)$(CC) $(CFLAGS_ALL) -c $< -o $@

$(LIB): $(LIB_OBJS)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(O)/remora: $(O)/obj/proxy/main.o $(LIB)
	@echo "  LD $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)

$(XDS_LIB): $(XDS_OBJS)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(O)/remora-xds: $(O)/obj/xds/server/main.o $(XDS_LIB) $(LIB)
	@echo "  LD $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS) $(XDS_LIBS)

# remora-certs, the mesh CA's command line (certs/ca.c is in the library).
$(O)/remora-certs: $(O)/obj/certs/cli/main.o $(LIB)
	@echo "  LD $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)

$(O)/remora-test-upstream: $(UPSTREAM_SRCS:%.c=$(O)/obj/%.o) $(LIB)
	@echo "  LD $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)

# The control plane's tests link its library and SQLite too.
$(O)/tests/unit/xds/%_test: tests/unit/xds/%_test.c $(XDS_LIB) $(LIB)
	@mkdir -p $(dir $@)
	@echo "  CC+LD $@"
	$(Q)$(CC) $(CFLAGS_ALL) -Wno-missing-prototypes -o $@ $< $(XDS_LIB) $(LIB) $(LDFLAGS_ALL) \
		$(LIBS) $(XDS_LIBS) -lcmocka

$(O)/tests/unit/%_test: tests/unit/%_test.c $(LIB)
	@mkdir -p $(dir $@)
	@echo "  CC+LD $@"
	$(Q)$(CC) $(CFLAGS_ALL) -Wno-missing-prototypes -o $@ $< $(LIB) $(LDFLAGS_ALL) $(LIBS) -lcmocka

# ---- tests -----------------------------------------------------------------------------------
# `make test` is the README's test command and what CI runs: it installs what is missing, then
# runs everything twice, once plain and once under ASan+UBSan.
test: deps
	$(Q)$(MAKE) --no-print-directory fmt-check check-headers
	$(Q)$(MAKE) --no-print-directory test-build
	$(Q)$(MAKE) --no-print-directory test-unit test-integration
	$(Q)$(MAKE) --no-print-directory SAN=1 test-build
	$(Q)$(MAKE) --no-print-directory SAN=1 test-unit test-integration
	$(Q)$(MAKE) --no-print-directory fuzz-replay

# Integration tests at once (run.py -j): most of a test's time is spent waiting on its processes,
# so three at a time on two cores halve the wall time (plain 4.6 -> 2.3 min, ASan 6.5 -> 2.9).
TEST_JOBS ?= 3

test-build: $(ALL_BINS) $(UNIT_BINS)

test-unit: $(UNIT_BINS)
	$(Q)scripts/run-unit.sh $(UNIT_BINS)

test-integration: $(ALL_BINS)
	$(Q)REMORA_BUILD=$(O) python3 tests/integration/run.py -j $(TEST_JOBS)

test-san:
	$(Q)$(MAKE) --no-print-directory SAN=1 test-unit test-integration

# ---- fuzzing ----------------------------------------------------------------------------------
# libFuzzer targets (clang). `make fuzz` builds them; `make fuzz-replay` runs each over its seed
# corpus once (part of `make test`); `make fuzz-run FUZZ_SECONDS=60` fuzzes for real.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_O := $(O)/fuzz
# The whole library, built with clang under ASan+UBSan and libFuzzer's coverage, so a target can
# drive any layer (the h1 codec, the config builder, ...) exactly as the proxy runs it.
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=address,undefined \
	-fno-sanitize-recover=undefined -MMD -MP -I. -I$(O)/gen \
	-I/usr/share/include/llhttp $(PKG_CFLAGS)
FUZZ_TARGETS := $(patsubst tests/fuzz/%_fuzz.c,$(FUZZ_O)/%_fuzz,$(wildcard tests/fuzz/*_fuzz.c))
FUZZ_LIB_OBJS := $(LIB_SRCS:%.c=$(FUZZ_O)/obj/%.o) $(PROTO_C:$(O)/gen/%.c=$(FUZZ_O)/obj/gen/%.o) \
	$(LLHTTP_C:$(O)/gen/%.c=$(FUZZ_O)/obj/gen/%.o)
# remora-xds's library too (appmesh_api_fuzz); an archive, so other targets do not pull it in.
FUZZ_XDS_LIB := $(FUZZ_O)/libremora-xds.a
$(LIB_SRCS:%.c=$(FUZZ_O)/obj/%.o) $(XDS_SRCS:%.c=$(FUZZ_O)/obj/%.o): | $(PROTO_H)

$(FUZZ_O)/obj/gen/%.o: $(O)/gen/%.c
	@mkdir -p $(dir $@)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -w -c $< -o $@

$(FUZZ_O)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC(fuzz) $<"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_O)/libremora.a: $(FUZZ_LIB_OBJS)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(FUZZ_XDS_LIB): $(XDS_SRCS:%.c=$(FUZZ_O)/obj/%.o)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(FUZZ_O)/%_fuzz: tests/fuzz/%_fuzz.c $(FUZZ_XDS_LIB) $(FUZZ_O)/libremora.a
	@echo "  FUZZ $@"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_XDS_LIB) $(FUZZ_O)/libremora.a \
		$(LIBS) $(XDS_LIBS)

fuzz: $(FUZZ_TARGETS)

fuzz-replay: $(FUZZ_TARGETS)
	$(Q)for t in $(FUZZ_TARGETS); do n=$$(basename $$t _fuzz); \
		$$t -runs=0 -artifact_prefix=$(FUZZ_O)/ tests/fuzz/corpus/$$n > $(FUZZ_O)/$$n.replay.log 2>&1 || \
		{ tail -30 $(FUZZ_O)/$$n.replay.log; exit 1; }; \
		echo "fuzz: $$n corpus replayed clean ($$(ls tests/fuzz/corpus/$$n | wc -l) inputs)"; done

fuzz-run: $(FUZZ_TARGETS)
	$(Q)for t in $(FUZZ_TARGETS); do n=$$(basename $$t _fuzz); mkdir -p $(FUZZ_O)/corpus-$$n; \
		dict=; [ -f tests/fuzz/$$n.dict ] && dict=-dict=tests/fuzz/$$n.dict; \
		$$t -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=$(FUZZ_O)/ $$dict $(FUZZ_O)/corpus-$$n \
		tests/fuzz/corpus/$$n || exit 1; done

# ---- demo and benchmarks ---------------------------------------------------------------------
demo: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)scripts/demo.sh $(O)

bench: deps-bench
	$(Q)$(MAKE) --no-print-directory all
	$(Q)bench/run.sh $(BENCH_ARGS)

bench-quick: deps-bench
	$(Q)$(MAKE) --no-print-directory all
	$(Q)bench/run.sh --quick

# Micro-benchmarks (bench/micro/): ns per operation of parsing, routing, LB picks and header
# ops, linked against the library with the normal flags; writes bench/micro/results.md.
MICRO_OBJS := $(patsubst %.c,$(O)/obj/%.o,$(wildcard bench/micro/*.c))
$(MICRO_OBJS): | $(PROTO_H)

$(O)/bench/micro: $(MICRO_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	@echo "  LD $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)

bench-micro: $(O)/bench/micro
	$(Q)$(O)/bench/micro -o bench/micro/results.md $(MICRO_ARGS)

# ---- hygiene ---------------------------------------------------------------------------------
FMT_SRCS = $(shell git ls-files --cached --others --exclude-standard '*.c' '*.h' 2>/dev/null)
fmt:
	$(Q)clang-format -i $(FMT_SRCS)

fmt-check:
	$(Q)clang-format --dry-run --Werror $(FMT_SRCS)

check-headers: | $(PROTO_H)
	$(Q)for h in $$(git ls-files 'proxy/*.h' 'filters/*.h' 'certs/*.h' 'xds/*.h'); do \
		echo "#include \"$$h\"" | $(CC) $(filter-out -MMD -MP,$(CFLAGS_ALL)) -x c -fsyntax-only - \
		|| exit 1; done

clean:
	rm -rf build

-include $(shell find $(O)/obj $(FUZZ_O)/obj -name '*.d' 2>/dev/null)
