-- The paper's GRU head: a GRUCell reads the points in order t = 0 -> 1 from h0 = 0, with
-- dropout on h after each step, and a linear layer reads the last h.
--   GRUHead(latent, classes, {hidden = 256, dropout = 0.25})
--   forward(x (B, P, latent), times (P)) -> logits (B, classes)
local T = require 'tdrl'
local nn = require 'tdrl.nn'

local GRUHead = nn.class('GRUHead', nn.Module)

function GRUHead:__init(latent, classes, o)
  nn.Module.__init(self)
  o = o or {}
  local g = {generator = o.generator}
  self.hidden = o.hidden or 256
  self.cell = nn.GRUCell(latent, self.hidden, g)
  self.drop = nn.Dropout(o.dropout or 0.25, g)
  self.out = nn.Linear(self.hidden, classes, g)
end

function GRUHead:forward(x, times)
  local B, P = x:size(1), x:size(2)
  local h = T.zeros(B, self.hidden)
  for k = 1, P do h = self.drop(self.cell(x:select(2, k), h)) end
  return self.out(h)
end

return GRUHead
