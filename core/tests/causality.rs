//! docs/design.md invariant 1: the logits of every sub-pixel have zero gradient with respect to every input
//! sub-pixel at or after it in the full generation order (all stages, all slices, channel order), and a
//! nonzero gradient with respect to the one just before it, so a leak or a cut path both fail.
use spn::config::StageKind;
use spn::model::Values;
use spn::pipeline::Parts;
use spn::{Pipeline, PipelineConfig};
use tch::{Device, Kind, Tensor};

/// Which input a unit is: (leaf index, channel, y, x) in full-image coordinates.
type Unit = (usize, i64, i64, i64);

fn check(config: PipelineConfig) {
    check_t(config, false)
}

/// libtorch's generator is global: tests of this file that draw from it in parallel would change each
/// other's dropout masks (and, rarely, drop every path to the sub-pixel before one), so they take turns.
static GLOBAL_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `train`: the logits with dropout on, as training computes them.
fn check_t(config: PipelineConfig, train: bool) {
    let _turn = GLOBAL_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(7);
    let p = Pipeline::new(config.clone(), Device::Cpu).unwrap();
    let (h, w, s) = (config.height, config.width, config.scale);
    let opts = (Kind::Float, Device::Cpu);
    let x = Tensor::randint(256, [1, 3, h, w], (Kind::Int64, Device::Cpu));
    let onehot = |v: &Tensor, levels: i64| {
        v.one_hot(levels)
            .permute([0, 1, 4, 2, 3])
            .to_kind(Kind::Float)
            .detach()
            .set_requires_grad(true)
    };
    // Leaves: [x] for the single stage, [m, l] for the pipeline.
    let (leaves, parts) = match config.msb_bits {
        None => {
            let lx = onehot(&x, 256);
            let parts = Parts {
                full: Some(Values::Soft(lx.shallow_clone())),
                msb: None,
                lsb: None,
            };
            (vec![lx], parts)
        }
        Some(b) => {
            let (m, l) = spn::subscale::split_depth(&x, b).unwrap();
            let (lm, ll) = (onehot(&m, 1 << b), onehot(&l, 1 << (8 - b)));
            let parts = Parts {
                full: None,
                msb: Some(Values::Soft(lm.shallow_clone())),
                lsb: Some(Values::Soft(ll.shallow_clone())),
            };
            (vec![lm, ll], parts)
        }
    };
    let inputs = p.stage_inputs(&parts).unwrap();

    // The generation order: every unit with its position in it.
    let mut order: Vec<(usize, i64, i64, i64, i64, Unit)> = Vec::new(); // (stage, k, r, c, ch, unit)
    for (si, net) in p.stages().iter().enumerate() {
        let sp = &net.spec;
        let (sh, sw) = sp.slice_hw();
        for k in sp.first_slice..sp.slices() {
            let (i, j) = (k / sp.scale, k % sp.scale);
            for r in 0..sh {
                for c in 0..sw {
                    let (y, xx) = (i + sp.scale * r, j + sp.scale * c);
                    for ch in 0..3 {
                        let unit = match sp.kind {
                            StageKind::Full => (0, ch, y, xx),
                            StageKind::Small => (0, ch, s * y, s * xx),
                            StageKind::SizeUp => (0, ch, y, xx),
                            StageKind::DepthUp => (1, ch, y, xx),
                        };
                        order.push((si, k, r, c, ch, unit));
                    }
                }
            }
        }
    }
    let rank: Vec<Tensor> = leaves
        .iter()
        .map(|_| Tensor::full([3, h, w], -1i64, (Kind::Int64, Device::Cpu)))
        .collect();
    for (n, o) in order.iter().enumerate() {
        let (l, ch, y, xx) = o.5;
        let _ = rank[l].get(ch).get(y).get(xx).fill_(n as i64);
    }
    for r in &rank {
        assert!(
            r.min().int64_value(&[]) >= 0,
            "every sub-pixel appears in the order"
        );
    }

    let anchor = leaves
        .iter()
        .map(|l| l.sum(Kind::Float))
        .fold(Tensor::zeros([], opts), |a, b| a + b * 0.0);
    let mut checked = 0;
    let mut n = 0usize;
    for (si, (own, cond)) in inputs.iter().enumerate() {
        let sp = &p.stages()[si].spec;
        for k in sp.first_slice..sp.slices() {
            let kk = Tensor::full([1], k, (Kind::Int64, Device::Cpu));
            let logits = p.stages()[si]
                .logits_t(own, cond.as_ref(), &kk, train)
                .unwrap(); // (1, 3, L, h, w)
            let proj = Tensor::randn([sp.levels()], opts);
            let (sh, sw) = sp.slice_hw();
            for r in 0..sh {
                for c in 0..sw {
                    for ch in 0..3 {
                        let o = &order[n];
                        assert_eq!((o.0, o.1, o.2, o.3, o.4), (si, k, r, c, ch));
                        let y = (logits.get(0).get(ch).select(1, r).select(1, c) * &proj)
                            .sum(Kind::Float)
                            + &anchor;
                        let grads = Tensor::run_backward(&[y], &leaves, true, false);
                        let mut earlier_max = 0f64;
                        for (li, g) in grads.iter().enumerate() {
                            let g = g.abs().sum_dim_intlist(2, false, Kind::Double); // (1, 3, H, W)
                            let at_or_after = g.get(0).masked_select(&rank[li].ge(n as i64));
                            let leak = if at_or_after.numel() > 0 {
                                at_or_after.max().double_value(&[])
                            } else {
                                0.0
                            };
                            assert_eq!(
                                leak, 0.0,
                                "stage {si} slice {k} ({r},{c}) ch {ch} sees the future"
                            );
                            if n > 0 {
                                let prev = &order[n - 1].5;
                                if prev.0 == li {
                                    earlier_max = earlier_max
                                        .max(g.double_value(&[0, prev.1, prev.2, prev.3]));
                                }
                            }
                        }
                        if n > 0 {
                            assert!(earlier_max > 0.0, "stage {si} slice {k} ({r},{c}) ch {ch} ignores the sub-pixel before it");
                        }
                        checked += 1;
                        n += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, order.len());
    assert_eq!(order.len() as i64, 3 * h * w * leaves.len() as i64);
}

#[test]
fn pipeline_is_causal_across_stages_slices_and_channels() {
    check(PipelineConfig::preset("tiny").unwrap());
}

/// Dropout masks units, never mixes positions: training must see no more of the future than sampling.
#[test]
fn pipeline_is_causal_with_dropout_while_training() {
    let mut c = PipelineConfig::preset("tiny").unwrap();
    c.net.dropout = 0.3;
    check_t(c, true);
}

#[test]
fn single_stage_spn_is_causal() {
    check(PipelineConfig::preset("tiny-full").unwrap());
}

#[test]
fn pipeline_with_subscaled_stage_a_is_causal() {
    let mut c = PipelineConfig::preset("tiny").unwrap();
    c.height = 16;
    c.width = 16;
    c.small_scale = 2;
    // Enough embedder depth that every slice position sees the whole earlier slice.
    c.net.embed_blocks = 4;
    check(c);
}
