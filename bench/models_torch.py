"""The workloads of bench/models_tdrl.lua in PyTorch (Debian's python3-torch, /usr/bin/python3).

The networks are written here the same way lua/tdrl/diffusion builds them (NCSN++ score net,
time-conditioned WRN encoder, heads, MINE), with the same parameter counts, so that the two
sides do the same work. `python3 bench/models_torch.py NAME` runs one workload and prints one
JSON line with the process's peak RSS; `--list` prints the names. Threads: TDRL_NUM_THREADS or
all cores; the OpenMP setting and the OpenBLAS core as bench/torch_env.py sets them (bench/run.lua
times each setting and compares with the fastest)."""
import json, math, os, resource, statistics, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_env import n_threads, torch  # noqa: E402  (threads, wait policy, BLAS core)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
SQRT2 = math.sqrt(2.0)
PRESETS = {
    "tiny": dict(nf=16, ch_mult=(1, 2, 2), nrb=1, attn=(), mid_attn=False, depth=10, widen=1, latent=16),
    "small": dict(nf=16, ch_mult=(1, 2, 2, 2), nrb=2, attn=(16,), mid_attn=True, depth=28, widen=2, latent=128),
}


def gn(c):
    return nn.GroupNorm(min(c // 4, 32), c, eps=1e-6)


class Fourier(nn.Module):
    def __init__(self, nf=16):
        super().__init__()
        self.register_buffer("W", torch.randn(nf) * 16)
        self.fc0, self.fc1 = nn.Linear(2 * nf, 4 * nf), nn.Linear(4 * nf, 4 * nf)

    def forward(self, ls):
        p = ls[:, None] * self.W[None] * 2 * math.pi
        return self.fc1(F.silu(self.fc0(torch.cat([p.sin(), p.cos()], 1))))


class Res(nn.Module):
    def __init__(self, cin, cout, td, up=False, down=False):
        super().__init__()
        cout = cout or cin
        self.up, self.down = up, down
        self.gn0, self.conv0, self.dense = gn(cin), nn.Conv2d(cin, cout, 3, padding=1), nn.Linear(td, cout)
        self.gn1, self.drop, self.conv1 = gn(cout), nn.Dropout(0.1), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if (cin != cout or up or down) else None

    def rs(self, x):
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.avg_pool2d(x, 2) if self.down else x

    def forward(self, x, temb):
        h = self.conv0(self.rs(F.silu(self.gn0(x)))) + self.dense(F.silu(temb))[:, :, None, None]
        h = self.conv1(self.drop(F.silu(self.gn1(h))))
        x = self.rs(x)
        return ((self.skip(x) if self.skip is not None else x) + h) / SQRT2


class Attn(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gn, self.q, self.k, self.v, self.o = gn(c), *(nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.gn(x)
        q, k, v = (m(h).reshape(B, C, H * W) for m in (self.q, self.k, self.v))
        w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * C ** -0.5, -1)
        return (x + self.o(torch.bmm(v, w.transpose(1, 2)).reshape(B, C, H, W))) / SQRT2


class WideBlock(nn.Module):
    def __init__(self, cin, cout, stride, td):
        super().__init__()
        self.bn1, self.conv1, self.dense = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, padding=1), nn.Linear(td, cout)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, stride=stride, padding=1)
        self.sc = nn.Conv2d(cin, cout, 1, stride=stride) if (stride != 1 or cin != cout) else None

    def forward(self, x, temb):
        h = self.conv1(F.relu(self.bn1(x))) + self.dense(F.silu(temb))[:, :, None, None]
        return self.conv2(F.relu(self.bn2(h))) + (self.sc(x) if self.sc is not None else x)


class WRN(nn.Module):
    def __init__(self, depth, k, latent):
        super().__init__()
        n = (depth - 4) // 6
        w = [16, 16 * k, 32 * k, 64 * k]
        self.temb, self.conv1 = Fourier(16), nn.Conv2d(3, 16, 3, padding=1)
        blocks, cin = [], 16
        for s in range(3):
            for i in range(n):
                blocks.append(WideBlock(cin, w[s + 1], (1 if s == 0 else 2) if i == 0 else 1, 64))
                cin = w[s + 1]
        self.blocks, self.bn, self.head = nn.ModuleList(blocks), nn.BatchNorm2d(w[3], momentum=0.9), nn.Linear(w[3], 2 * latent)

    def forward(self, x, ls):
        temb = self.temb(ls)
        h = self.conv1(x)
        for b in self.blocks:
            h = b(h, temb)
        return self.head(F.relu(self.bn(h)).mean((2, 3))).chunk(2, -1)


class NCSNpp(nn.Module):
    def __init__(self, c):
        super().__init__()
        nf, mult, nrb = c["nf"], c["ch_mult"], c["nrb"]
        res = [32 >> i for i in range(len(mult))]
        self.temb, self.enc = Fourier(nf), WRN(c["depth"], c["widen"], c["latent"])
        self.l2t, td, self.L, self.nf = nn.Linear(c["latent"], 4 * nf), 8 * nf, res[-1], nf
        w = 2 * nf * self.L
        self.zdec = nn.ModuleList([nn.Linear(td, w), nn.Linear(w, w), nn.Linear(w, w * self.L)])
        self.conv_in = nn.Conv2d(3, nf, 3, padding=1)
        hs, ch, pyr = [nf], nf, 3
        self.down = nn.ModuleList()
        for lvl in range(len(mult)):
            m = nn.Module()
            bl, at = [], []
            for _ in range(nrb):
                bl.append(Res(ch, nf * mult[lvl], td)); ch = nf * mult[lvl]
                at.append(Attn(ch) if res[lvl] in c["attn"] else nn.Identity()); hs.append(ch)
            m.blocks, m.attns = nn.ModuleList(bl), nn.ModuleList(at)
            m.ds = Res(ch, None, td, down=True) if lvl < len(mult) - 1 else None
            m.pyr = nn.Conv2d(pyr, ch, 3, stride=2) if lvl < len(mult) - 1 else None
            if m.ds is not None:
                pyr = ch; hs.append(ch)
            self.down.append(m)
        ch = hs[-1] * 2
        self.mid1 = Res(ch, None, td)
        self.mid_attn = Attn(ch) if c["mid_attn"] else None
        self.mid2 = Res(ch, None, td)
        self.up = nn.ModuleList()
        for lvl in reversed(range(len(mult))):
            m = nn.Module()
            bl = []
            for _ in range(nrb + 1):
                bl.append(Res(ch + hs.pop(), nf * mult[lvl], td)); ch = nf * mult[lvl]
            m.blocks = nn.ModuleList(bl)
            m.attn = Attn(ch) if res[lvl] in c["attn"] else None
            m.upb = Res(ch, None, td, up=True) if lvl else None
            self.up.append(m)
        self.gn_out, self.conv_out = gn(ch), nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, x, ls, x0):
        mu, lv = self.enc(x0, ls)
        z = mu + torch.randn_like(lv) * torch.exp(0.5 * lv)
        temb = torch.cat([self.temb(ls), self.l2t(z)], -1)
        pyr, hs = x, [self.conv_in(x)]
        for m in self.down:
            for b, a in zip(m.blocks, m.attns):
                hs.append(a(b(hs[-1], temb)))
            if m.ds is not None:
                h = m.ds(hs[-1], temb)
                pyr = (m.pyr(F.pad(pyr, (0, 1, 0, 1))) + h) / SQRT2
                hs.append(pyr)
        zd = temb
        for lin in self.zdec:
            zd = F.silu(lin(zd))
        h = torch.cat([hs[-1], zd.reshape(-1, 2 * self.nf, self.L, self.L)], 1)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)) if self.mid_attn else self.mid1(h, temb), temb)
        for m in self.up:
            for b in m.blocks:
                h = b(torch.cat([h, hs.pop()], 1), temb)
            if m.attn is not None:
                h = m.attn(h)
            if m.upb is not None:
                h = m.upb(h, temb)
        return self.conv_out(F.silu(self.gn_out(h))) / torch.exp(ls)[:, None, None, None], mu, lv


def timed(fn, warm, reps):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def dsm(preset, warm, reps, B=100):
    model = NCSNpp(PRESETS[preset])
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    x0 = torch.rand(B, 3, 32, 32)
    lr_ratio = math.log(50 / 0.01)

    def step():
        t = torch.rand(B) * (1 - 1e-5) + 1e-5
        ls = t * lr_ratio + math.log(0.01)
        sigma = ls.exp()[:, None, None, None]
        eps = torch.randn_like(x0)
        out, mu, lv = model(x0 + sigma * eps, ls, x0)
        per = 0.5 * (out * sigma + eps).pow(2).reshape(B, -1).sum(-1)
        kl = -0.5 * (1 + lv - mu.pow(2) - lv.exp()).sum(-1)
        opt.zero_grad()
        (per + 1e-5 * kl).mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    s = timed(step, warm, reps)
    n_params = sum(p.numel() for p in model.parameters())
    return {"value": s, "unit": "s/step", "higher": False, "note": f"{n_params} parameters"}


def traj(preset, passes):
    c = PRESETS[preset]
    enc = WRN(c["depth"], c["widen"], c["latent"]).eval()
    X = torch.rand(1000, 3, 32, 32)

    def run():
        with torch.no_grad():
            for k in range(11):
                t = torch.full((1000,), k / 10)
                enc(X, t * math.log(5000) + math.log(0.01))
    s = timed(run, 1, passes)
    return {"value": 1000 / s, "unit": "img/s", "higher": True}


class GRUHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell, self.drop, self.out = nn.GRUCell(128, 256), nn.Dropout(0.25), nn.Linear(256, 10)

    def forward(self, x):
        h = x.new_zeros(x.shape[0], 256)
        for k in range(x.shape[1]):
            h = self.drop(self.cell(x[:, k], h))
        return self.out(h)


class TsfHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj, self.drop = nn.Linear(128, 256), nn.Dropout(0.25)
        pos = torch.arange(11)[:, None] * torch.exp(torch.arange(0, 256, 2) * (-math.log(10000.0) / 256))
        self.register_buffer("pe", torch.stack([pos.sin(), pos.cos()], -1).reshape(11, 256))
        self.cls = nn.Parameter(torch.empty(1, 1, 256)); nn.init.xavier_uniform_(self.cls)
        self.block = nn.TransformerEncoderLayer(256, 4, 512, 0.25, batch_first=True)
        self.block.self_attn.dropout = 0.0
        self.out = nn.Linear(256, 10)

    def forward(self, x):
        h = torch.cat([self.drop(self.proj(x)) + self.pe, self.cls.expand(x.shape[0], 1, 256)], 1)
        return self.out(self.block(self.block(h))[:, -1])


def head(kind, steps):
    N = 256 * steps
    X, y = torch.randn(N, 11, 128), torch.randint(0, 10, (N,))
    h = {"mlp": lambda: nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Dropout(0.25), nn.Linear(512, 10)),
         "gru": GRUHead, "transformer": TsfHead}[kind]()
    opt = torch.optim.Adam(h.parameters(), lr=1e-3, weight_decay=1e-5)

    def epoch():
        perm = torch.randperm(N)
        for s in range(steps):
            idx = perm[s * 256:(s + 1) * 256]
            xb = X[idx]
            logits = h(xb[:, 0]) if kind == "mlp" else h(xb)
            opt.zero_grad()
            F.cross_entropy(logits, y[idx]).backward()
            if kind != "mlp":
                torch.nn.utils.clip_grad_norm_(h.parameters(), 1.0)
            opt.step()
    s = timed(epoch, 1, 3)
    return {"value": s * 175 / steps, "unit": "s/epoch", "higher": False}


def mine():
    X, Y = torch.randn(10000, 128), torch.randn(10000, 128)
    net = nn.Sequential(nn.Linear(256, 256), nn.ELU(), nn.Linear(256, 256), nn.ELU(), nn.Linear(256, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    ma = [1.0]

    def run():
        for _ in range(100):
            i, i1, i2 = (torch.randint(0, 10000, (256,)) for _ in range(3))
            tj = net(torch.cat([X[i], Y[i]], 1)).mean()
            et = net(torch.cat([X[i1], Y[i2]], 1)).exp().mean()
            ma[0] = 0.99 * ma[0] + 0.01 * et.item()
            opt.zero_grad()
            (-(tj - et / ma[0])).backward()
            opt.step()
    s = timed(run, 1, 3)
    return {"value": 100 / s, "unit": "iters/s", "higher": True}


WORK = {
    "dsm_tiny": ("dsm_step tiny (VDRL, b100)", lambda: dsm("tiny", 2, 6)),
    "dsm_small": ("dsm_step small (VDRL, b100)", lambda: dsm("small", 1, 3)),
    "dsm_tiny_b32": ("dsm_step tiny (VDRL, b32)", lambda: dsm("tiny", 3, 8, 32)),
    "dsm_small_b32": ("dsm_step small (VDRL, b32)", lambda: dsm("small", 2, 5, 32)),
    "dsm_tiny_b64": ("dsm_step tiny (VDRL, b64)", lambda: dsm("tiny", 3, 8, 64)),
    "dsm_small_b64": ("dsm_step small (VDRL, b64)", lambda: dsm("small", 2, 5, 64)),
    "traj_tiny": ("trajectories tiny (1000 img x 11 t)", lambda: traj("tiny", 3)),
    "traj_small": ("trajectories small (1000 img x 11 t)", lambda: traj("small", 1)),
    "head_mlp": ("head MLP epoch (45000 x 11 x 128, b256)", lambda: head("mlp", 175)),
    "head_gru": ("head GRU epoch (45000 x 11 x 128, b256)", lambda: head("gru", 20)),
    "head_tsf": ("head Transformer epoch (45000 x 11 x 128, b256)", lambda: head("transformer", 10)),
    "mine": ("MINE (d=128, b256)", mine),
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(WORK))
        sys.exit(0)
    torch.manual_seed(0)
    for key in (sys.argv[1:] or list(WORK)):
        name, fn = WORK[key]
        r = fn()
        r["name"] = name
        r["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(r), flush=True)
