# Real Lua hosts: the Neovim example headless (Debian's nvim) and the LÖVE example under
# xvfb-run (Debian's love), against the bundled server; prints the measured figures.
# They run LuaJIT whatever $(LUA) is, so the LuaJIT build comes first. `make deps` installs
# neovim, love, xvfb and xauth; spec/hosts_spec.lua is also part of `make test`.
.PHONY: hosts hosts-nvim hosts-love

hosts:
	$(MAKE) LUA=luajit
	$(MAKE) test BUSTED_ARGS=spec/hosts_spec.lua

# one host, driven by hand: `make hosts-nvim SCENARIO=burst`, `make hosts-love LOVE_ENV='LLMCHAT_LOVE_LONG=20000 LLMCHAT_LOVE_STREAMS=16'`
SCENARIO ?= streams
HOSTS_OUT ?= build/hosts
hosts-nvim:
	$(MAKE) LUA=luajit
	@mkdir -p $(HOSTS_OUT)
	@set -e; pf=$(HOSTS_OUT)/server.port; rm -f $$pf; \
	lua5.4 bin/llmchat-server --port 0 --port-file $$pf --quiet & spid=$$!; \
	trap 'kill $$spid 2>/dev/null' EXIT; \
	for i in $$(seq 100); do [ -s $$pf ] && break; sleep 0.05; done; \
	LLMCHAT_BASE_URL=http://127.0.0.1:$$(cat $$pf)/v1 LLMCHAT_NVIM_SCENARIO=$(SCENARIO) \
	  LLMCHAT_NVIM_OUT=$(HOSTS_OUT)/nvim-$(SCENARIO).lua \
	  timeout -k 5 120 nvim --headless -u NONE -i NONE -n -c 'luafile examples/neovim/headless.lua' </dev/null; \
	echo "results: $(HOSTS_OUT)/nvim-$(SCENARIO).lua"

hosts-love:
	$(MAKE) LUA=luajit
	@mkdir -p $(HOSTS_OUT)
	@set -e; pf=$(HOSTS_OUT)/server.port; rm -f $$pf; \
	lua5.4 bin/llmchat-server --port 0 --port-file $$pf --quiet & spid=$$!; \
	trap 'kill $$spid 2>/dev/null' EXIT; \
	for i in $$(seq 100); do [ -s $$pf ] && break; sleep 0.05; done; \
	env LLMCHAT_BASE_URL=http://127.0.0.1:$$(cat $$pf)/v1 LLMCHAT_LOVE_OUT=$(HOSTS_OUT)/love.lua $(LOVE_ENV) \
	  timeout -k 5 120 xvfb-run -a love examples/love; \
	echo "results: $(HOSTS_OUT)/love.lua"
