# djinn-consumer — see README.md.
#
#   make            build ./djinn-consumer
#   make deps       install the Debian packages the build and tests need
#   make test       deps + build + whole GoogleTest suite (unit, integration)
#   make asan       the same suite under AddressSanitizer + UBSan (SANITIZE=1)
#   make bench      benchmarks against local servers (docs/performance.md)
#   make fuzz       fuzz the decoders for FUZZ_SECONDS each (clang/libFuzzer)
#   make demo       the main job end to end on throwaway local servers
#   make install    PREFIX, DESTDIR, SYSCONFDIR honoured
#
# BUILD=dir puts objects elsewhere (several builds side by side).

VERSION    := 0.1.0
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
DESTDIR    ?=
SANITIZE   ?= 0
BUILD      ?= build

CXX      ?= g++
CXXSTD   := -std=c++20
WARN     := -Wall -Wextra -Werror -Wshadow -Wnon-virtual-dtor -Wformat=2
OPT      ?= -O2
PKGS     := hiredis libpq libcurl libconfig libseccomp msgpack nlohmann_json libcrypto libmicrohttpd libsystemd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

# OUT, not BUILD, is where objects go: BUILD may come from the command line,
# which a makefile assignment cannot change.
OUT := $(BUILD)
ifeq ($(SANITIZE),1)
  OUT     := $(BUILD)-asan
  SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  OPT     := -O1
  # GCC 12 reports false maybe-uninitialized warnings inside libstdc++'s
  # <regex> and <functional> when instrumenting; they are not ours.
  WARN    += -Wno-maybe-uninitialized
endif

CPPFLAGS += -I. -DDJINN_VERSION='"$(VERSION)"' -D_GNU_SOURCE
CXXFLAGS += $(CXXSTD) $(OPT) -g $(WARN) $(SANFLAGS) $(PKG_CFLAGS) -MMD -MP
# Full RELRO: symbols bound at start-up, the GOT then read-only. Also spares
# every download process (a fresh fork) binding them again lazily.
LDFLAGS  += $(SANFLAGS) -Wl,-z,relro,-z,now
LDLIBS   += $(PKG_LIBS) -lpthread

LIB_SRCS := $(wildcard common/*.cc) $(wildcard worker/*.cc) $(wildcard worker/jobs/*.cc) \
            $(filter-out master/main.cc,$(wildcard master/*.cc))
LIB_OBJS := $(LIB_SRCS:%.cc=$(OUT)/%.o)
LIB      := $(OUT)/libdjinn.a

HARNESS_SRCS := $(wildcard tests/harness/*.cc)
UNIT_SRCS := $(wildcard tests/unit/*.cc) $(HARNESS_SRCS)
INTEG_SRCS := $(wildcard tests/integration/*.cc) $(HARNESS_SRCS)
UNIT_OBJS := $(UNIT_SRCS:%.cc=$(OUT)/%.o)
INTEG_OBJS := $(INTEG_SRCS:%.cc=$(OUT)/%.o)
GTEST_LIBS := -lgtest -lgtest_main -lgmock -lcrypto

# The binary goes to the top (what the README runs) unless the objects go
# elsewhere (BUILD=dir or SANITIZE=1): then beside them, so that several
# builds can live side by side.
BIN := djinn-consumer
ifneq ($(OUT),build)
  BIN := $(OUT)/djinn-consumer
endif

.PHONY: all deps test unit integration asan bench fuzz demo install uninstall clean check-config

all: $(BIN)

$(BIN): $(OUT)/master/main.o $(LIB)
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(LIB): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(OUT)/%.o: %.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c -o $@ $<

$(OUT)/unit_tests: $(UNIT_OBJS) $(LIB)
	$(CXX) $(LDFLAGS) -o $@ $^ $(GTEST_LIBS) $(LDLIBS)

$(OUT)/integration_tests: $(INTEG_OBJS) $(LIB)
	$(CXX) $(LDFLAGS) -o $@ $^ $(GTEST_LIBS) $(LDLIBS)

deps:
	@sh tests/deps.sh

# The test binaries find the daemon through DJINN_CONSUMER.
# The build uses every CPU (JOBS=1 for a serial one); the tests then run
# one binary at a time.
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
test: deps
	@$(MAKE) --no-print-directory -j$(JOBS) $(BIN) $(OUT)/unit_tests $(OUT)/integration_tests
	@sh tests/run.sh $(OUT) $(abspath $(BIN))

unit: $(OUT)/unit_tests
	$(OUT)/unit_tests

integration: $(BIN) $(OUT)/integration_tests
	DJINN_CONSUMER=$(abspath $(BIN)) $(OUT)/integration_tests

asan:
	@$(MAKE) --no-print-directory SANITIZE=1 test

# Benchmarks print ratios measured in the same run (docs/performance.md).
bench: deps
	@$(MAKE) --no-print-directory $(BIN)
	DJINN_CONSUMER=$(abspath $(BIN)) python3 bench/latency_bench.py
	DJINN_CONSUMER=$(abspath $(BIN)) python3 bench/queue_bench.py
	DJINN_CONSUMER=$(abspath $(BIN)) python3 bench/small_download_bench.py
	DJINN_CONSUMER=$(abspath $(BIN)) python3 bench/download_bench.py
	DJINN_CONSUMER=$(abspath $(BIN)) python3 bench/multihost_bench.py

FUZZ_SECONDS ?= 60
fuzz: deps
	sh fuzz/run.sh $(FUZZ_SECONDS)

demo: deps
	@$(MAKE) --no-print-directory $(BIN)
	sh tests/demo.sh $(abspath $(BIN))

check-config: $(BIN)
	./$(BIN) -t -config etc/djinn-consumer.conf

clean:
	rm -rf build build-asan djinn-consumer

include mk/install.mk

-include $(sort $(LIB_OBJS:.o=.d) $(UNIT_OBJS:.o=.d) $(INTEG_OBJS:.o=.d)) $(OUT)/master/main.d
