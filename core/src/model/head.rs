//! Output head with channel order: R from the trunk, G given R, B given R and G. The trunk runs once per
//! pixel; only this small head runs per channel.
use super::layers::{linear, new_embedding, new_linear, new_randn, Embedding};
use super::values::Values;
use crate::decode::neighbours::{
    BLEND_MIN_SPREAD, FIXED, IMAGE, IN_SLICE, LINES, SIDES_BASE, SIDES_OFFSET, SIDES_SPAN,
};
use crate::error::Result;
use tch::{nn, Kind, Tensor};

/// The copy path (`crate::decode::neighbours`): a gate per neighbour and channel from the trunk, and the
/// weight of the earlier channels' agreement with that neighbour.
#[derive(Debug)]
pub struct CopyGates {
    pub gate: nn::Linear,
    /// `(E * 3)`, E entries (`neighbours::entries`).
    pub agree: Tensor,
    entries: i64,
    /// The last `blends` entries are blend entries (`neighbours::blend_level`).
    blends: i64,
}

/// Slopes on the line entries (`net.line_slopes`, `neighbours::add_copy_bonus`): a gate per line entry and
/// channel from the trunk, and the weight of the earlier channels' agreement with the entry.
#[derive(Debug)]
pub struct LineSlopes {
    pub gate: nn::Linear,
    /// `(K * 3)`, K line entries (`neighbours::slopes`).
    pub agree: Tensor,
    lines: i64,
    /// The blend entries' slopes (`net.blend_slopes`): gates and agreement weights `(K' * 3)`.
    pub blend: Option<(nn::Linear, Tensor)>,
    blends: i64,
}

#[derive(Debug)]
pub struct ChannelHead {
    pub proj: nn::Linear,
    pub r_to_g: Embedding,
    pub r_to_b: Embedding,
    pub g_to_b: Embedding,
    pub out: [nn::Linear; 3],
    pub copy: Option<CopyGates>,
    pub slopes: Option<LineSlopes>,
}

impl ChannelHead {
    /// `copy_entries`: the copy path's entries per target (`neighbours::entries`), 0 without it, of which
    /// the last `blends` are blend entries (`neighbours::blends`); `slopes`: its line entries with a slope
    /// (`neighbours::slopes`), and `blend_slopes` its blend entries with one (`neighbours::blend_slopes`).
    pub fn new(
        vs: nn::Path,
        dim: i64,
        levels: i64,
        (copy_entries, blends, slopes, blend_slopes): (usize, usize, usize, usize),
    ) -> Result<Self> {
        let emb = |n: &str| new_embedding(&(&vs / n), levels, dim);
        let lin = |n: &str| new_linear(&(&vs / n), dim, levels);
        Ok(Self {
            proj: new_linear(&(&vs / "proj"), dim, dim)?,
            r_to_g: emb("r_to_g")?,
            r_to_b: emb("r_to_b")?,
            g_to_b: emb("g_to_b")?,
            out: [lin("out_r")?, lin("out_g")?, lin("out_b")?],
            copy: (copy_entries > 0)
                .then(|| -> Result<CopyGates> {
                    let gates = 3 * copy_entries as i64;
                    let gate = new_linear(&(&vs / "copy_gate"), dim, gates)?;
                    close_palette(&gate, 3 * blends as i64)?;
                    Ok(CopyGates {
                        gate,
                        agree: new_randn(&vs, "copy_agree", &[gates], 0.01)?,
                        entries: copy_entries as i64,
                        blends: blends as i64,
                    })
                })
                .transpose()?,
            slopes: (copy_entries > 0 && slopes > 0)
                .then(|| LineSlopes::new(&vs, dim, slopes as i64, blend_slopes as i64))
                .transpose()?,
        })
    }

    /// Channel-last trunk features `(B, h, w, D)` after the shared projection.
    pub fn trunk(&self, trunk: &Tensor) -> Result<Tensor> {
        linear(&trunk.f_permute([0, 2, 3, 1])?.f_relu()?, &self.proj)
    }

    /// Logits of channel `c` at every position, `(B, h, w, L)`, given the features, the earlier channels'
    /// values (`earlier[i]` is channel i, `(B, h, w)` or one-hot `(B, L, h, w)`) and, with the copy path,
    /// the copy map `(B, h, w, E, 3)` (int64, `neighbours::NONE` where nothing is copied).
    pub fn channel_logits(
        &self,
        t: &Tensor,
        c: usize,
        earlier: &[Values],
        copy: Option<&Tensor>,
    ) -> Result<Tensor> {
        let h = match c {
            0 => t.shallow_clone(),
            1 => t.f_add(&earlier[0].embed(&self.r_to_g)?)?,
            _ => t
                .f_add(&earlier[0].embed(&self.r_to_b)?)?
                .f_add(&earlier[1].embed(&self.g_to_b)?)?,
        };
        let logits = linear(&h.f_relu()?, &self.out[c])?;
        match (&self.copy, copy) {
            (Some(gates), Some(map)) => {
                let levels = gates.levels(map, c, earlier, logits.size4()?)?;
                let logits = gates.add_bonus(t, logits, c, &levels)?;
                match &self.slopes {
                    Some(s) => s.add_slopes(t, logits, c, &levels),
                    None => Ok(logits),
                }
            }
            (None, _) => Ok(logits),
            (Some(_), None) => Err(crate::error::Error::Other(
                "the copy path needs the copy map".into(),
            )),
        }
    }

    /// Teacher-forced logits of all three channels: `(B, 3, L, h, w)`.
    pub fn forward(
        &self,
        trunk: &Tensor,
        target: &Values,
        copy: Option<&Tensor>,
    ) -> Result<Tensor> {
        let t = self.trunk(trunk)?;
        let earlier = [target.channel(0)?, target.channel(1)?];
        let mut out = Vec::with_capacity(3);
        for c in 0..3 {
            out.push(
                self.channel_logits(&t, c, &earlier, copy)?
                    .f_permute([0, 3, 1, 2])?,
            );
        }
        Ok(Tensor::f_stack(&out, 1)?)
    }
}

/// Starts the gates of the palette and the line entries closed (zero weights, bias -4: a bonus of 0.018 nats), so that a model warm
/// started from one without the palette (`train::warm_start` keeps the old rows) begins with its density
/// unchanged: random gates on trained features gave each palette colour nats of bonus, and the 64 run's
/// training loss went from 0.97 to 1.42 bits/dim in its first 100 steps. The last `blend_gates` (the blend
/// entries) start half open (bias 0, a bonus of 0.69 nats): closed, Adam opens a gate by about the learning
/// rate a step (the spread bins' lesson, models/README.md, stop 22), and a blend is right for most of the
/// edge pixels it serves.
fn close_palette(gate: &nn::Linear, blend_gates: i64) -> Result<()> {
    let first = 3 * (IMAGE.len() + IN_SLICE.len()) as i64;
    let all = gate.ws.size().first().copied().unwrap_or(0);
    tch::no_grad(|| -> Result<()> {
        let _ = gate.ws.f_narrow(0, first, all - first)?.f_zero_()?;
        if let Some(b) = &gate.bs {
            let _ = b.f_narrow(0, first, all - first)?.f_fill_(-4.0)?;
            let _ = b.f_narrow(0, all - blend_gates, blend_gates)?.f_zero_()?;
        }
        Ok(())
    })
}

/// One channel's copy entries: each entry's level (negative: none) and how many earlier channels agree with
/// it, `(B, h, w, N)`; computed once for the copy bonus and the slopes.
struct EntryLevels {
    /// The plain entries (the first E - K').
    plain: (Tensor, Tensor),
    /// The K' blend entries, for the channels after red.
    blend: Option<(Tensor, Tensor)>,
}

impl CopyGates {
    /// The entries' levels for channel `c` from `map` `(B, h, w, E, 3)`, for logits of shape `(b, h, w, L)`.
    fn levels(
        &self,
        map: &Tensor,
        c: usize,
        earlier: &[Values],
        (b, h, w, levels): (i64, i64, i64, i64),
    ) -> Result<EntryLevels> {
        let map = map.f_view([b, h, w, self.entries, 3])?;
        let plain = self.entries - self.blends;
        Ok(EntryLevels {
            plain: plain_levels(&map.f_narrow(3, 0, plain)?, c, earlier)?,
            blend: (self.blends > 0 && c > 0)
                .then(|| blend_levels(&map.f_narrow(3, plain, self.blends)?, c, earlier, levels))
                .transpose()?,
        })
    }

    /// `neighbours::add_copy_bonus` on libtorch, for every position at once: `t` `(B, h, w, D)`, `logits`
    /// `(B, h, w, L)`.
    fn add_bonus(&self, t: &Tensor, logits: Tensor, c: usize, lv: &EntryLevels) -> Result<Tensor> {
        let n = self.entries;
        let (z, agree) = channel_gates(t, (&self.gate, &self.agree), n, c)?;
        let plain = n - self.blends;
        let (v, matched) = &lv.plain;
        let part = |t: &Tensor| t.f_narrow(-1, 0, plain);
        let logits = scatter_bonus(logits, &part(&z)?, &part(&agree)?, v, matched)?;
        match &lv.blend {
            Some((v, matched)) => {
                let part = |t: &Tensor| t.f_narrow(-1, plain, self.blends);
                scatter_bonus(logits, &part(&z)?, &part(&agree)?, v, matched)
            }
            None => Ok(logits),
        }
    }
}

impl LineSlopes {
    /// Gates start as a weak prior where a line's two sides are close (spread bins 0 and 1: bias -2, 0.13
    /// nats a level away) and nearly none across edges (bias -4), so that a warm start (which has no such
    /// weights) begins close to its density (on held-out noto at 256 that start alone already lowered the
    /// bits, docs/design.md section 3); the linear weights start at zero, and Adam moves each of the D
    /// of them by about the learning rate a step, which opens a gate where it pays within hundreds of steps
    /// (a bias alone would take thousands: the spread bins' lesson, models/README.md, stop 22).
    fn new(vs: &nn::Path, dim: i64, lines: i64, blends: i64) -> Result<Self> {
        let gate = new_linear(&(vs / "line_slope"), dim, 3 * lines)?;
        let near = (3 * 2 * LINES.len() as i64).min(3 * lines);
        weak_slopes(&gate, near)?;
        let blend = (blends > 0)
            .then(|| -> Result<(nn::Linear, Tensor)> {
                let g = new_linear(&(vs / "blend_slope"), dim, 3 * blends)?;
                // A blend serves edges and ramps alike: every one starts as a weak prior.
                weak_slopes(&g, 3 * blends)?;
                Ok((g, new_randn(vs, "blend_slope_agree", &[3 * blends], 0.01)?))
            })
            .transpose()?;
        Ok(Self {
            gate,
            agree: new_randn(vs, "line_slope_agree", &[3 * lines], 0.01)?,
            lines,
            blend,
            blends,
        })
    }

    /// `neighbours::add_copy_bonus`'s slopes on libtorch: `t` `(B, h, w, D)`, `logits` `(B, h, w, L)`; each
    /// line entry's `softplus(gate + agree * matched) * |l - v|` off level l (the line entries are the plain
    /// entries from `neighbours::FIXED` on; the blend slopes serve the last K' blend entries).
    fn add_slopes(&self, t: &Tensor, logits: Tensor, c: usize, lv: &EntryLevels) -> Result<Tensor> {
        let levels = logits.size4()?.3;
        let n = self.lines;
        let lines = |x: &Tensor| x.f_narrow(3, FIXED as i64, n);
        let (v, matched) = (lines(&lv.plain.0)?, lines(&lv.plain.1)?);
        let gates = channel_gates(t, (&self.gate, &self.agree), n, c)?;
        let logits = logits.f_sub(&slope_penalty(gates, &v, &matched, levels)?)?;
        match (&self.blend, &lv.blend) {
            (Some((gate, agree)), Some((v, matched))) => {
                let k = self.blends;
                let last = |x: &Tensor| x.f_narrow(3, x.size4()?.3 - k, k);
                let gates = channel_gates(t, (gate, agree), k, c)?;
                let penalty = slope_penalty(gates, &last(v)?, &last(matched)?, levels)?;
                Ok(logits.f_sub(&penalty)?)
            }
            _ => Ok(logits),
        }
    }
}

/// Slopes of the closed-gate start: zero weights, bias -4 (0.018 nats a level), and -2 (0.13) for the
/// first `near` rows.
fn weak_slopes(gate: &nn::Linear, near: i64) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        let _ = gate.ws.shallow_clone().f_zero_()?;
        if let Some(b) = &gate.bs {
            let _ = b.shallow_clone().f_fill_(-4.0)?;
            let _ = b.f_narrow(0, 0, near)?.f_fill_(-2.0)?;
        }
        Ok(())
    })
}

/// `sum_j softplus(z_j + agree_j * matched_j) * |l - v_j|` for every level `l`, `(B, h, w, L)`, over the
/// entries `j` with a level (`v` `(B, h, w, N)`, negative: none). As `S D`: the slopes summed per level,
/// `S` `(B, h, w, L)`, times the levels' distances `D` `(L, L)`, so that backward keeps `S`, not an
/// `(B, h, w, N, L)` tensor of distances (which doubled the 256 run's training memory, stop 28).
fn slope_penalty(
    (z, agree): (Tensor, Tensor),
    v: &Tensor,
    matched: &Tensor,
    levels: i64,
) -> Result<Tensor> {
    let (b, h, w, _) = z.size4()?;
    let zeros = Tensor::f_zeros([b, h, w, levels], (Kind::Float, z.device()))?;
    let per_level = scatter_bonus(zeros, &z, &agree, v, matched)?;
    let at = Tensor::f_arange(levels, (Kind::Float, v.device()))?;
    let dist = at.f_unsqueeze(1)?.f_sub(&at.f_unsqueeze(0)?)?.f_abs()?; // (L, L), symmetric
    Ok(per_level.f_matmul(&dist)?)
}

/// Channel `c`'s gate logits `(B, h, w, N)` of features `t` `(B, h, w, D)` and its agreement weights `(N,)`,
/// for gates and agreement weights laid out entry-major, `(N * 3)`.
fn channel_gates(
    t: &Tensor,
    (gate, agree): (&nn::Linear, &Tensor),
    n: i64,
    c: usize,
) -> Result<(Tensor, Tensor)> {
    let (b, h, w, _) = t.size4()?;
    let z = linear(t, gate)?
        .f_view([b, h, w, n, 3])?
        .f_select(4, c as i64)?;
    Ok((z, agree.f_view([n, 3])?.f_select(1, c as i64)?))
}

/// Adds `softplus(z + agree * matched)` to the logit of each entry's level `v` (`(B, h, w, N)`, negative:
/// none): the copy bonus, and (added to zeros) the slopes summed per level.
fn scatter_bonus(
    logits: Tensor,
    z: &Tensor,
    agree: &Tensor,
    v: &Tensor,
    matched: &Tensor,
) -> Result<Tensor> {
    let bonus = z
        .f_add(&matched.f_mul(agree)?)?
        .f_softplus()?
        .f_mul(&v.f_ge(0)?.f_to_kind(Kind::Float)?)?;
    Ok(logits.f_scatter_add(3, &v.f_clamp_min(0)?, &bonus)?)
}

/// The plain entries' levels for channel `c` and how many earlier channels agree with each: `map`
/// `(B, h, w, N, 3)`.
fn plain_levels(map: &Tensor, c: usize, earlier: &[Values]) -> Result<(Tensor, Tensor)> {
    let level = |ch: usize| map.f_select(4, ch as i64); // (B, h, w, N)
    let v = level(c)?;
    let mut matched = Tensor::f_zeros(v.size(), (Kind::Float, v.device()))?;
    for (ch, e) in earlier.iter().enumerate().take(c) {
        let nb = level(ch)?;
        let same = match e {
            Values::Hard(e) => e
                .f_unsqueeze(-1)?
                .f_eq_tensor(&nb)?
                .f_to_kind(Kind::Float)?,
            // One-hot: the probability mass on the neighbour's level.
            Values::Soft(e) => {
                e.f_permute([0, 2, 3, 1])?
                    .f_gather(3, &nb.f_clamp_min(0)?, false)?
            }
        };
        matched = matched.f_add(&same.f_mul(&nb.f_ge(0)?.f_to_kind(Kind::Float)?)?)?;
    }
    Ok((v, matched))
}

/// `neighbours::blend_level` for every blend entry at once: `map` `(B, h, w, K, 3)` of packed sides,
/// channel `c` >= 1; the levels (-1: none) and whether the other earlier channel agrees, `(B, h, w, K)`.
fn blend_levels(
    map: &Tensor,
    c: usize,
    earlier: &[Values],
    levels: i64,
) -> Result<(Tensor, Tensor)> {
    let valid = map.f_select(4, 0)?.f_ge(SIDES_BASE as i64)?;
    let packed = map.f_sub_scalar(SIDES_BASE as i64)?.f_clamp_min(0)?;
    let a = packed
        .f_div_scalar_mode(SIDES_SPAN as i64, "floor")?
        .f_sub_scalar(SIDES_OFFSET as i64)?;
    let cc = packed
        .f_remainder(SIDES_SPAN as i64)?
        .f_sub_scalar(SIDES_OFFSET as i64)?;
    let side = |t: &Tensor, ch: i64| t.f_select(4, ch);
    // The chosen levels of the earlier channels, (B, h, w, 1).
    let chosen = |ch: usize| -> Result<Tensor> {
        let e = match &earlier[ch] {
            Values::Hard(e) => e.shallow_clone(),
            Values::Soft(e) => e.f_argmax(1, false)?,
        };
        Ok(e.f_unsqueeze(-1)?)
    };
    let spread = |ch: i64| side(&a, ch)?.f_sub(&side(&cc, ch)?)?.f_abs();
    // The anchor is green only for blue, where green's sides are strictly further apart than red's.
    let green = if c >= 2 {
        spread(1)?.f_gt_tensor(&spread(0)?)?
    } else {
        Tensor::f_zeros_like(&valid)?
    };
    let pick = |g: &Tensor, r: &Tensor| g.f_where_self(&green, r);
    let (aa, ca) = (
        pick(&side(&a, 1)?, &side(&a, 0)?)?,
        pick(&side(&cc, 1)?, &side(&cc, 0)?)?,
    );
    let t = if c >= 2 {
        pick(&chosen(1)?.f_expand_as(&aa)?, &chosen(0)?.f_expand_as(&aa)?)?
    } else {
        chosen(0)?.f_expand_as(&aa)?
    };
    let t = t
        .f_maximum(&aa.f_minimum(&ca)?)?
        .f_minimum(&aa.f_maximum(&ca)?)?;
    let den = aa.f_sub(&ca)?;
    let ok = valid.f_logical_and(&den.f_abs()?.f_ge(i64::from(BLEND_MIN_SPREAD))?)?;
    // Rounded half up, the denominator made positive (and 1 where there is no entry).
    let sign = den.f_sign()?;
    let d = den.f_abs()?.f_clamp_min(1)?;
    let predict = |x: i64| -> Result<Tensor> {
        let (ax, cx) = (side(&a, x)?, side(&cc, x)?);
        let num = t.f_sub(&ca)?.f_mul(&ax.f_sub(&cx)?)?.f_mul(&sign)?;
        Ok(cx
            .f_add(
                &num.f_mul_scalar(2)?
                    .f_add(&d)?
                    .f_div_tensor_mode(&d.f_mul_scalar(2)?, "floor")?,
            )?
            .f_clamp(0, levels - 1)?)
    };
    let v = predict(c as i64)?.f_where_scalarother(&ok, -1)?;
    let matched = if c >= 2 {
        // The earlier channel that is not the anchor: red where green is, green where red is.
        let other_pred = pick(&predict(0)?, &predict(1)?)?;
        let other = pick(&chosen(0)?.f_expand_as(&aa)?, &chosen(1)?.f_expand_as(&aa)?)?;
        other_pred
            .f_eq_tensor(&other)?
            .f_logical_and(&ok)?
            .f_to_kind(Kind::Float)?
    } else {
        Tensor::f_zeros(v.size(), (Kind::Float, v.device()))?
    };
    Ok((v, matched))
}
