-- tdrl.plot: PNG figures drawn in Lua with an embedded bitmap font (no font or image packages).
--   plot.lines({series = {...}}, opts, path)     line plots, seed bands, horizontal reference lines
--   plot.heatmap(matrix, opts, path)             matrices with a colour bar (NMI, JSD)
--   plot.bars({labels=, values=, errors=, groups=}, opts, path)
--   plot.grid(images, {nrow=, padding=, scale=}, path)   image grids of (N, C, H, W) in [0, 1]
-- Each returns the canvas (pixels readable with cv:rgb(x, y)) and writes a PNG when path is given.
-- Also: plot.Canvas, plot.colormap, plot.font, plot.png (encoder), plot.read_png(path).
local plot = {}

plot.Canvas = require 'tdrl.plot.canvas'
plot.colormap = require 'tdrl.plot.colormap'
plot.font = require 'tdrl.plot.font'
plot.png = require 'tdrl.plot.png'
plot.theme = require('tdrl.plot.common').theme

plot.lines = require 'tdrl.plot.lines'
plot.heatmap = require 'tdrl.plot.heatmap'
plot.bars = require 'tdrl.plot.bars'
plot.grid = require 'tdrl.plot.grid'

--- decodes a PNG file: {width=, height=, channels=, data=}, with img:rgb(x, y)
function plot.read_png(path)
  return require('tdrl.plot.pngread').read(path)
end

return plot
