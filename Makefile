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

LUA_CFLAGS  := $(shell $(PKG_CONFIG) --cflags $(LUA_PC))
CURL_CFLAGS := $(shell $(PKG_CONFIG) --cflags libcurl)
CURL_LIBS   := $(shell $(PKG_CONFIG) --libs libcurl)

OPT      ?= -O2 -g
WARN     := -Wall -Wextra -Werror -Wmissing-prototypes -Wshadow -Wstrict-prototypes -pedantic
CFLAGS_ALL := -std=c99 -D_GNU_SOURCE -fPIC -fvisibility=hidden $(OPT) $(WARN) $(LUA_CFLAGS) $(CURL_CFLAGS) $(EXTRA_CFLAGS)
LDFLAGS_ALL := -shared $(EXTRA_LDFLAGS)

BUILD  := build/$(LUA)
SRCS   := $(wildcard src/*.c)
OBJS   := $(patsubst src/%.c,$(BUILD)/%.o,$(SRCS))
MODULE := llmchat/core.so

BUSTED ?= $(LUA) /usr/bin/busted

.PHONY: all test spec check demo bench fuzz asan valgrind lint clean server

all: $(MODULE)

$(BUILD)/%.o: src/%.c $(wildcard src/*.h) Makefile
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

# no -llua: the host process provides the Lua API
$(MODULE): $(OBJS)
	@mkdir -p llmchat
	$(CC) $(LDFLAGS_ALL) -o $@ $(OBJS) $(CURL_LIBS)

test: all
	$(BUSTED) $(BUSTED_ARGS)

spec: test

lint:
	luacheck lua spec bench examples bin

server:
	$(LUA) bin/llmchat-server

clean:
	rm -rf build llmchat

# Each concept may add its own targets (fuzzers, C unit tests) in mk/<concept>.mk.
-include $(wildcard mk/*.mk)
