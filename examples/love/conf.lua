-- luacheck: globals love
-- LÖVE 11 configuration of the llmchat village (examples/love/main.lua)
function love.conf(t)
  t.identity = "llmchat-village"
  t.version = "11.0"
  t.window.title = "llmchat village: the villagers stream their lines"
  t.window.width = 960
  t.window.height = 640
  t.window.vsync = 1
  -- nothing here needs sound, joysticks or physics
  t.modules.audio = false
  t.modules.sound = false
  t.modules.joystick = false
  t.modules.physics = false
  t.modules.video = false
end
