-- The paper's single-point head: one MLP per time point.
--   MLPHead(latent, classes, {hidden = 512, dropout = 0.25})
--   forward(x (B, P, latent), times (P)) -> logits (B, classes); uses the one point it is given
--   (the protocol hands it x[:, {k}, :]), or the mean over points when P > 1.
--   MLPHead(latent, classes, {concat = true, points = P}) reads the P codes concatenated
--   (P x latent inputs): the fixed-points baseline of the learned-times heads.
local T = require 'tdrl'
local nn = require 'tdrl.nn'

local MLPHead = nn.class('MLPHead', nn.Module)

function MLPHead:__init(latent, classes, o)
  nn.Module.__init(self)
  o = o or {}
  local g = {generator = o.generator}
  self.concat = o.concat and true or false
  if self.concat then latent = latent * (o.points or 1) end
  self.fc1 = nn.Linear(latent, o.hidden or 512, g)
  self.drop = nn.Dropout(o.dropout or 0.25, g)
  self.fc2 = nn.Linear(o.hidden or 512, classes, g)
end

function MLPHead:forward(x, times)
  local h
  if self.concat then h = x:reshape(x:size(1), -1)
  else h = x:size(2) == 1 and x:select(2, 1) or x:mean(2) end
  return self.fc2(self.drop(self.fc1(h):relu()))
end

return MLPHead
