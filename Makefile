# llmchat: build, test, demo, bench, fuzz, sanitizers.
# `make` builds llmchat/core.so for Lua 5.4; `make LUA=luajit` or `make LUA=lua5.1`
# builds for those (the compat header covers the API gap).

LUA        ?= lua5.4
PKG_CONFIG ?= pkg-config
CC         ?= cc

ifeq ($(LUA),luajit)
  LUA_PC := luajit
else
  LUA_PC := $(LUA)
endif

# `=`, not `:=`: expanded when a recipe uses them, after `make deps` has installed
# pkg-config and the headers (the README's `make deps demo` runs in one make)
LUA_CFLAGS   = $(shell $(PKG_CONFIG) --cflags $(LUA_PC))
ifeq ($(LUA),luajit)
  # Debian's lua-compat53-dev puts compat-5.3.h beside the 5.1 headers
  LUA_CFLAGS += -I/usr/include/lua5.1
endif
CURL_CFLAGS  = $(shell $(PKG_CONFIG) --cflags libcurl)
CURL_LIBS    = $(shell $(PKG_CONFIG) --libs libcurl)

OPT      ?= -O2 -g
WARN     := -Wall -Wextra -Werror -Wmissing-prototypes -Wshadow -Wstrict-prototypes -pedantic
CFLAGS_ALL  = -std=c99 -D_GNU_SOURCE -fPIC -fvisibility=hidden $(OPT) $(WARN) $(LUA_CFLAGS) $(CURL_CFLAGS) $(EXTRA_CFLAGS)
LDFLAGS_ALL := -shared $(EXTRA_LDFLAGS)

BUILD  ?= build/$(LUA)
# one translation unit (src/unity.c includes every other src/*.c): see its header
SRCS   := $(filter-out src/unity.c,$(wildcard src/*.c))
OBJS   := $(BUILD)/unity.o
# every Lua version builds out of tree: one never breaks another's `make test`
MODULE ?= $(BUILD)/llmchat/core.so

BUSTED ?= $(LUA) /usr/bin/busted

.PHONY: all test test-all spec check demo bench fuzz asan valgrind lint clean server deps rock rock-all compat

all: $(MODULE)

$(BUILD)/unity.o: src/unity.c $(SRCS) $(wildcard src/*.h) Makefile
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

# no -llua: the host process provides the Lua API
$(MODULE): $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $(OBJS) $(CURL_LIBS)

# The whole suite: specs talk HTTP to the bundled server on 127.0.0.1.
# Specs that start a child interpreter use $$LLMCHAT_LUA and $$LUA_CPATH (this build).
test: all
	LLMCHAT_LUA=$(LUA) LUA_CPATH="$(BUILD)/?.so;;" $(BUSTED) --cpath="$(BUILD)/?.so" $(BUSTED_ARGS)

spec: test

# The whole suite on every Lua version (LUAS), one after another; each version's
# summary and wall time, then the totals in busted's format. Goes on past a failure.
LUAS ?= luajit lua5.1 lua5.2 lua5.3 lua5.4
test-all:
	@MAKE="$(MAKE)" sh spec/support/test-all.sh $(LUAS)

# installs missing Debian packages (as root)
deps:
	sh .ci/deps

# a real round trip against the bundled local server
demo: all
	@sh examples/run-demo.sh $(LUA)

# builds for Lua 5.1 and LuaJIT from the same source, and loads each
compat:
	$(MAKE) LUA=lua5.1 BUILD=build/lua5.1 MODULE=build/lua5.1/llmchat/core.so
	$(MAKE) LUA=luajit BUILD=build/luajit MODULE=build/luajit/llmchat/core.so
	cd build/lua5.1 && lua5.1 -e 'package.path="../../lua/?.lua;../../lua/?/init.lua;"..package.path; local l=require"llmchat"; print("lua5.1:", l._VERSION)'
	cd build/luajit && luajit -e 'package.path="../../lua/?.lua;../../lua/?/init.lua;"..package.path; local l=require"llmchat"; print("luajit:", l._VERSION)'

# AddressSanitizer + UBSan over the whole suite (a separate build: the
# normal llmchat/core.so is left alone)
ASAN_DIR := build/asan
asan:
	$(MAKE) BUILD=$(ASAN_DIR)/obj MODULE=$(ASAN_DIR)/llmchat/core.so \
	  OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined"
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	  LLMCHAT_LUA=$(LUA) LUA_CPATH="$(ASAN_DIR)/?.so;;" \
	  $(BUSTED) --cpath="$(ASAN_DIR)/?.so" $(BUSTED_ARGS)

# valgrind over the whole suite (slow)
valgrind: all
	LLMCHAT_LUA=$(LUA) LUA_CPATH="$(BUILD)/?.so;;" \
	  valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
	  --show-leak-kinds=definite --trace-children=no \
	  $(LUA) /usr/bin/busted --cpath="$(BUILD)/?.so" $(BUSTED_ARGS)

# installs the source rock (make dist) into a private tree for $(LUA), as a user would
# (no network; LuaRocks builds in its own temporary directory, not in the checkout)
ROCK_LUA = $(if $(filter luajit,$(LUA)),5.1,$(patsubst lua%,%,$(LUA)))
rock: dist
	rm -rf build/rocktree
	luarocks --lua-version=$(ROCK_LUA) install --deps-mode=none --tree build/rocktree $(DIST_ROCK)

# luarocks make for every version (LuaJIT: the 5.1 tree), each from a copy of the
# checkout, loaded by its own interpreter: spec/package_spec.lua under each
rock-all:
	@MAKE="$(MAKE)" BUSTED_ARGS=spec/package_spec.lua sh spec/support/test-all.sh $(LUAS)

lint:
	luacheck lua testing spec bench examples bin

server:
	$(LUA) bin/llmchat-server

# every build directory: per-Lua builds, asan, fuzzers and their corpora, C tests, dist,
# rock trees (all under build/), an in-place `luarocks make` (llmchat/, src/*.o), bench
# output, and libFuzzer artifacts written where a fuzzer was run by hand
clean:
	rm -rf build llmchat bench/out fuzz/out
	rm -f src/*.o crash-* leak-* timeout-* oom-* slow-unit-*

# Each concept may add its own targets (fuzzers, C unit tests) in mk/<concept>.mk.
-include $(wildcard mk/*.mk)
