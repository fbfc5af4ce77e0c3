-- tdrl.plot: figures drawn in Lua with an embedded bitmap font, written as PNG by the core (stb).
--   plot.lines({series = {...}}, opts, path)     line plots, seed bands, horizontal reference lines
--   plot.heatmap(matrix, opts, path)             matrices with a colour bar (NMI, JSD)
--   plot.bars({labels=, values=, errors=, groups=}, opts, path)
--   plot.grid(images, {nrow=, padding=, scale=}, path)   image grids of (N, C, H, W) in [0, 1]
-- Each returns the canvas (pixels readable with cv:rgb(x, y)) and writes a PNG when path is given.
-- Also: plot.Canvas, plot.colormap, plot.font, plot.read_png(path).
local plot = {}

plot.Canvas = require 'tdrl.plot.canvas'
plot.colormap = require 'tdrl.plot.colormap'
plot.font = require 'tdrl.plot.font'
plot.theme = require('tdrl.plot.common').theme

plot.lines = require 'tdrl.plot.lines'
plot.heatmap = require 'tdrl.plot.heatmap'
plot.bars = require 'tdrl.plot.bars'
plot.grid = require 'tdrl.plot.grid'

--- read_png(path) -> {width =, height =, channels =, pixels = (C, H, W) float in [0, 1]}, with
--- img:rgb(x, y) -> r, g, b bytes (0-based x, y; grey repeats its one value): a PNG file read by
--- the core's decoder (stb_image), to check a figure's pixels
local Image = {}
Image.__index = Image

function Image:rgb(x, y)
  local px, c = self.pixels, self.channels
  local function byte(ch) return math.floor(px:get(ch, y + 1, x + 1) * 255 + 0.5) end
  if c < 3 then local v = byte(1) return v, v, v end
  return byte(1), byte(2), byte(3)
end

function plot.read_png(path)
  if type(path) ~= "string" then error("read_png: expects a file name, got " .. type(path), 2) end
  local px = require('tdrl')._data.image_load(path)
  return setmetatable({width = px:size(3), height = px:size(2), channels = px:size(1), pixels = px}, Image)
end

return plot
