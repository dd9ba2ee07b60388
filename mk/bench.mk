# `make bench`: every client on the same workloads against a private local nginx; see
# bench/README.md. It reports targets and never fails the build because one is missed.
# Settings come from the environment or the command line (BENCH_RUNS=3 make bench).

BENCH_OUT   := bench/out
BENCH_BINS  := $(BENCH_OUT)/floor $(BENCH_OUT)/timecmd $(BENCH_OUT)/benchclock.so
BENCH_CFLAGS ?= -O2 -Wall -Wextra

export BENCH_RUNS BENCH_SEQ BENCH_TOOLCALLS BENCH_LONG BENCH_CONC_TOTAL BENCH_PACED \
       BENCH_PACED_RATE BENCH_NODE BENCH_ONLY BENCH_TIMEOUT BENCH_UPDATE_README BENCH_PIN

.PHONY: bench-tools bench-clean bench-deps

# as root on Debian: installs what is missing (the build dependencies and nginx)
bench-deps:
	@sh bench/deps

bench-tools: $(BENCH_BINS)

$(BENCH_OUT)/floor: bench/floor.c
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) -o $@ $< $(CURL_CFLAGS) $(CURL_LIBS)

$(BENCH_OUT)/timecmd: bench/timecmd.c
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) -o $@ $<

# a Lua C module for the Lua bench's clock; no -llua, like llmchat itself
$(BENCH_OUT)/benchclock.so: bench/benchclock.c
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) -fPIC -shared $(LUA_CFLAGS) -o $@ $<

# llmchat is built first when it builds; if it does not yet, its rows show n/a.
bench: bench-deps
	@$(MAKE) --no-print-directory bench-tools
	@$(MAKE) --no-print-directory all || echo "bench: llmchat did not build; its rows will be n/a" >&2
	@bash bench/run

bench-clean:
	rm -rf $(BENCH_OUT)
