//! docs/design.md invariants 2-5 for the sampler: incremental = full, teacher-forced log-probabilities = parallel
//! NLL, clamping, determinism and batch independence, cancellation, and sampling that follows the model.
use spn::decode::cpu::{CpuSliceDecoder, CpuStepWeights};
use spn::decode::full::FullPass;
use spn::decode::tensor::{SliceDecoder, StepWeights};
use spn::model::Values;
use spn::sampler::{no_progress, CancelToken, Decoding, SampleOptions, Sampler};
use spn::{Error, Pipeline, PipelineConfig};
use tch::{Device, Kind, Tensor};

fn model(preset: &str, seed: i64) -> Pipeline {
    tch::manual_seed(seed);
    let p = Pipeline::new(PipelineConfig::preset(preset).unwrap(), Device::Cpu).unwrap();
    open_slopes(&p);
    p
}

/// Random weights for the line and blend entries' slopes (`net.line_slopes`, `net.blend_slopes`), whose gates start with zero weights: the
/// engines must agree on where each slope's row of the gates lies, which zeros would not show.
fn open_slopes(p: &Pipeline) {
    tch::no_grad(|| {
        for (name, t) in p.named_weights() {
            let (scale, shift) = match name {
                n if n.contains("_slope.weight") => (0.05, 0.0),
                n if n.contains("_slope.bias") => (0.5, -2.0),
                n if n.contains("_slope_agree") => (0.5, 0.0),
                _ => continue,
            };
            let r = Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * scale + shift;
            t.shallow_clone().copy_(&r);
        }
    });
}

fn images(p: &Pipeline, n: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    // Smooth-ish random images: a coarse random image upsampled, plus noise.
    let (h, w) = (p.config().height, p.config().width);
    let coarse = Tensor::randint(256, [n, 3, h / 2, w / 2], (Kind::Int64, Device::Cpu));
    let up = coarse
        .repeat_interleave_self_int(2, 2, None)
        .repeat_interleave_self_int(2, 3, None);
    (up + Tensor::randint(16, [n, 3, h, w], (Kind::Int64, Device::Cpu))).clamp(0, 255)
}

/// The CPU engine's plain-Rust slice embedder and context projection (`decode::embed`) against libtorch's, on
/// every stage of the presets and several target slices: within 1e-4.
#[test]
fn the_host_embedder_matches_libtorch() {
    for preset in ["tiny", "tiny-full", "emoji"] {
        let p = model(preset, 11);
        let x = images(&p, 3, 5);
        let parts = p.decompose(&x).unwrap();
        for (si, (net, (own, cond))) in p
            .stages()
            .iter()
            .zip(p.stage_inputs(&parts).unwrap())
            .enumerate()
        {
            let hw = p.host_weights().unwrap().under(net.spec.kind.name());
            let host = spn::decode::embed::HostEmbedder::new(&net.spec, &hw).unwrap();
            let n = net.spec.slices();
            for k in [net.spec.first_slice, n / 2, n - 1] {
                let kk = Tensor::from_slice(&[k, k, k]);
                let embed_in = net.condition(&own, cond.as_ref(), &kk).unwrap();
                let ctx = net.embedder.forward_t(&embed_in, &kk, false).unwrap();
                let proj = spn::model::layers::conv2d_same(&ctx, &net.decoder.context).unwrap();
                let (_, _, h, w) = embed_in.size4().unwrap();
                let cl = |t: &Tensor| {
                    Vec::<f32>::try_from(
                        t.flatten(2, 3).transpose(1, 2).contiguous().flatten(0, -1),
                    )
                    .unwrap()
                };
                let (cond_cl, ctx_cl, proj_cl) = (cl(&embed_in), cl(&ctx), cl(&proj));
                let per = (h * w) as usize;
                let (d, pw) = (host.d(), host.proj_width());
                // All three images through one call, as the engine embeds a group of images.
                let ks = [k as usize; 3];
                let (all_c, all_p) = host.forward(&cond_cl, &ks, h as usize, w as usize).unwrap();
                for i in 0..3 {
                    let c = &all_c[i * per * d..(i + 1) * per * d];
                    let pj = &all_p[i * per * pw..(i + 1) * per * pw];
                    let close = |a: &[f32], b: &[f32]| {
                        a.iter()
                            .zip(b)
                            .map(|(x, y)| (x - y).abs())
                            .fold(0f32, f32::max)
                    };
                    let e1 = close(c, &ctx_cl[i * per * d..(i + 1) * per * d]);
                    let e2 = close(pj, &proj_cl[i * per * pw..(i + 1) * per * pw]);
                    assert!(
                        e1 < 1e-4 && e2 < 1e-4,
                        "{preset} stage {si} slice {k}: {e1} {e2}"
                    );
                }
            }
        }
    }
}

#[test]
fn incremental_logits_equal_full_pass_logits() {
    for preset in ["tiny", "tiny-full"] {
        let p = model(preset, 1);
        let x = images(&p, 3, 2);
        let parts = p.decompose(&x).unwrap();
        let inputs = p.stage_inputs(&parts).unwrap();
        let mut worst = 0f64;
        tch::no_grad(|| {
            for (si, (own, cond)) in inputs.iter().enumerate() {
                let net = &p.stages()[si];
                let w = StepWeights::new(net).unwrap();
                let own_t = own.tensor();
                for k in net.spec.first_slice..net.spec.slices() {
                    let kk = Tensor::full([3], k, (Kind::Int64, Device::Cpu));
                    let full = net.logits(own, cond.as_ref(), &kk).unwrap(); // (B, 3, L, h, w)
                    let ctx = net.context(own, cond.as_ref(), &kk).unwrap();
                    let mut dec = SliceDecoder::new(net, &w, &ctx).unwrap();
                    let cond_in = net.condition(own, cond.as_ref(), &kk).unwrap();
                    let copy = net
                        .copy_map(&cond_in, &kk, &own.gather_slice(&kk).unwrap())
                        .unwrap();
                    let (h, wd) = net.spec.slice_hw();
                    let target = own_t.select(2, k);
                    for pos in 0..h * wd {
                        let (r, c) = (pos / wd, pos % wd);
                        let f = dec.features(pos).unwrap();
                        let px = target.select(2, r).select(2, c); // (B, 3)
                        let earlier = [
                            Values::Hard(px.select(1, 0).view([3, 1, 1])),
                            Values::Hard(px.select(1, 1).view([3, 1, 1])),
                        ];
                        let copy_at = copy
                            .as_ref()
                            .map(|m| m.select(1, r).select(1, c).unsqueeze(1).unsqueeze(1));
                        for ch in 0..3 {
                            let inc = net
                                .head
                                .channel_logits(&f, ch, &earlier[..ch], copy_at.as_ref())
                                .unwrap()
                                .view([3, -1]);
                            let reference = full.select(1, ch as i64).select(2, r).select(2, c);
                            let d = (inc - reference).abs().max().double_value(&[]);
                            worst = worst.max(d);
                        }
                        dec.commit(pos, &px).unwrap();
                    }
                }
            }
        });
        assert!(
            worst < 1e-4,
            "{preset}: incremental logits differ from the full pass by {worst}"
        );
    }
}

/// The head's copy map of target slices `k` as the host engines take it, `(B, h * w, NEIGHBOURS, 3)` (empty
/// without the copy path): `filled`, with the in-slice neighbours taken from the target slice (the full pass);
/// otherwise left for the decoder to fill in as it commits.
fn copy_rows(
    net: &spn::model::SpnNet,
    own: &spn::model::Values,
    cond: Option<&spn::model::Values>,
    k: &Tensor,
    filled: bool,
) -> Vec<i32> {
    if !net.spec.net.copy {
        return Vec::new();
    }
    let c = net.condition(own, cond, k).unwrap();
    if filled {
        let target = own.gather_slice(k).unwrap();
        let m = net.copy_map(&c, k, &target).unwrap().unwrap();
        return Vec::<i64>::try_from(m.flatten(0, -1))
            .unwrap()
            .into_iter()
            .map(|v| v as i32)
            .collect();
    }
    let (_, cin, h, w) = c.size4().unwrap();
    let cl = Vec::<f32>::try_from(c.permute([0, 2, 3, 1]).contiguous().flatten(0, -1)).unwrap();
    let ks: Vec<usize> = Vec::<i64>::try_from(k)
        .unwrap()
        .iter()
        .map(|&k| k as usize)
        .collect();
    spn::decode::neighbours::copy_map(&net.spec, &cl, cin as usize, &ks, (h as usize, w as usize))
        .unwrap()
}

/// The CPU decoder (row-wise precomputation, threads of image groups) against the full pass, with groups of
/// one and of several images, on every stage and slice.
#[test]
fn cpu_decoder_logits_equal_full_pass_logits() {
    // The presets, plus the emoji preset's shape (5x5 first conv, 4 heads, attention in block 3) and a 1x1
    // first conv (no taps at all), at small sizes.
    let mut configs: Vec<PipelineConfig> = ["tiny", "tiny-full"]
        .iter()
        .map(|n| PipelineConfig::preset(n).unwrap())
        .collect();
    let mut emoji_shape = PipelineConfig::preset("tiny").unwrap();
    emoji_shape.name = "emoji-shaped".into();
    (emoji_shape.height, emoji_shape.width) = (16, 12);
    emoji_shape.net.heads = 4;
    emoji_shape.net.first_kernel = 5;
    emoji_shape.net.decoder_blocks = 3;
    emoji_shape.net.attention_every = 3;
    emoji_shape.net.line_slopes = true;
    emoji_shape.net.blend_slopes = true;
    configs.push(emoji_shape);
    let mut one_by_one = PipelineConfig::preset("tiny-full").unwrap();
    one_by_one.name = "1x1".into();
    one_by_one.net.first_kernel = 1;
    configs.push(one_by_one);
    for cfg in configs {
        let preset = cfg.name.clone();
        tch::manual_seed(11);
        let p = Pipeline::new(cfg, Device::Cpu).unwrap();
        open_slopes(&p);
        let x = images(&p, 3, 12);
        let parts = p.decompose(&x).unwrap();
        let inputs = p.stage_inputs(&parts).unwrap();
        let mut worst = 0f64;
        let mut checked = 0usize;
        tch::no_grad(|| {
            for (si, (own, cond)) in inputs.iter().enumerate() {
                let net = &p.stages()[si];
                let hw = p.host_weights().unwrap().under(net.spec.kind.name());
                let w = CpuStepWeights::new(&net.spec, &hw).unwrap();
                let fullpass = FullPass::new(&net.spec, &hw).unwrap();
                let own_t = own.tensor();
                for k in net.spec.first_slice..net.spec.slices() {
                    let kk = Tensor::full([3], k, (Kind::Int64, Device::Cpu));
                    let full = net.logits(own, cond.as_ref(), &kk).unwrap(); // (B, 3, L, h, w)
                    let ctx = net.context(own, cond.as_ref(), &kk).unwrap();
                    let cl = |t: &Tensor| {
                        Vec::<f32>::try_from(
                            t.flatten(2, 3).transpose(1, 2).contiguous().flatten(0, -1),
                        )
                        .unwrap()
                    };
                    let proj = spn::model::layers::conv2d_same(&ctx, &net.decoder.context).unwrap();
                    let (ctx_v, proj_v) = (cl(&ctx), cl(&proj));
                    let (h, wd) = net.spec.slice_hw();
                    let n = (h * wd) as usize;
                    let target = own_t.select(2, k);
                    let (copy, raw) = (
                        copy_rows(net, own, cond.as_ref(), &kk, true),
                        copy_rows(net, own, cond.as_ref(), &kk, false),
                    );
                    let cw = copy.len() / 3;
                    // The plain-Rust full pass (`decode::full`, which scores known slices): every
                    // image's teacher-forced logits.
                    let d = net.spec.net.channels as usize;
                    let pw = w.proj_width();
                    for i in 0..3usize {
                        let t = target.select(0, i as i64); // (3, h, w)
                        let vals: Vec<[i64; 3]> = (0..n as i64)
                            .map(|pos| {
                                let px = t.select(1, pos / wd).select(1, pos % wd);
                                [0, 1, 2].map(|c| px.int64_value(&[c]))
                            })
                            .collect();
                        let fp = fullpass.logits(
                            &w,
                            &ctx_v[i * n * d..(i + 1) * n * d],
                            &proj_v[i * n * pw..(i + 1) * n * pw],
                            &vals,
                            &copy[i * cw..(i + 1) * cw],
                        );
                        // (3, L, h, w) -> (h * w, 3, L)
                        let reference = Vec::<f32>::try_from(
                            full.select(0, i as i64)
                                .flatten(2, 3)
                                .permute([2, 0, 1])
                                .contiguous()
                                .flatten(0, -1),
                        )
                        .unwrap();
                        assert_eq!(fp.len(), reference.len());
                        for (a, b) in fp.iter().zip(&reference) {
                            worst = worst.max((a - b).abs() as f64);
                            checked += 1;
                        }
                    }
                    // Groups: images {0, 1} together, then {2} alone.
                    for (start, size) in [(0usize, 2usize), (2, 1)] {
                        let mut dec = CpuSliceDecoder::new(
                            &w,
                            size,
                            &ctx_v[start * n * d..(start + size) * n * d],
                            &proj_v[start * n * pw..(start + size) * n * pw],
                        )
                        .with_copy(&raw[start * cw..(start + size) * cw])
                        .unwrap();
                        for pos in 0..n {
                            let (r, c) = (pos as i64 / wd, pos as i64 % wd);
                            let vals: Vec<[i64; 3]> = (0..size)
                                .map(|i| {
                                    let px = target
                                        .select(0, (start + i) as i64)
                                        .select(1, r)
                                        .select(1, c);
                                    [
                                        px.int64_value(&[0]),
                                        px.int64_value(&[1]),
                                        px.int64_value(&[2]),
                                    ]
                                })
                                .collect();
                            dec.features(pos);
                            for ch in 0..3 {
                                let inc = dec.channel_logits(ch, &vals).to_vec();
                                let l = inc.len() / size;
                                for i in 0..size {
                                    let reference = full
                                        .select(0, (start + i) as i64)
                                        .select(0, ch as i64)
                                        .select(1, r)
                                        .select(1, c);
                                    for j in 0..l {
                                        let d = (inc[i * l + j] as f64
                                            - reference.double_value(&[j as i64]))
                                        .abs();
                                        worst = worst.max(d);
                                        checked += 1;
                                    }
                                }
                            }
                            dec.commit(pos, &vals);
                        }
                    }
                }
            }
        });
        assert!(checked > 1000, "{preset}: only {checked} logits compared");
        assert!(
            worst < 1e-4,
            "{preset}: CPU decoder or host full-pass logits differ from libtorch's full pass by {worst}"
        );
    }
}

#[test]
fn teacher_forced_log_probs_sum_to_the_parallel_nll() {
    for preset in ["tiny", "tiny-full"] {
        let p = model(preset, 3);
        let x = images(&p, 4, 4);
        let parallel = p.likelihood(&x).unwrap().total;
        for decoding in [
            Decoding::Incremental,
            Decoding::IncrementalTensor,
            Decoding::Naive,
        ] {
            let s = Sampler::new(
                &p,
                SampleOptions {
                    decoding,
                    batch_size: 3,
                    ..Default::default()
                },
            )
            .unwrap();
            let bits = s
                .teacher_forced_bits(&x, &mut no_progress(), &CancelToken::new())
                .unwrap();
            for (i, b) in bits.iter().enumerate() {
                let nll = parallel.double_value(&[i as i64]) / std::f64::consts::LN_2;
                assert!(
                    (b - nll).abs() < 1e-4 * nll,
                    "{preset} {decoding:?} image {i}: {b} vs {nll}"
                );
            }
        }
    }
}

/// On a canvas of many windows too, every engine draws the same image: each window's randomness comes from
/// (seed, window), whatever the engine and the batching (docs/design.md section 8).
#[test]
fn every_engine_draws_the_same_canvas() {
    let p = model("tiny", 5);
    let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(20, 14, |x, y| {
        image::Rgb([(x * 12) as u8, (y * 17) as u8, 99])
    }));
    let known: Vec<bool> = (0..20 * 14).map(|i| i % 20 < 7).collect();
    let small = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(9, 6, |x, y| {
        image::Rgb([(x * 25) as u8, 200, (y * 40) as u8])
    }));
    // The same weights read from a bundle without libtorch: the engine libspn runs on CPU hosts.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.spn");
    p.save(&path).unwrap();
    let host = spn::HostModel::load(&path).unwrap();
    let run = |model: &dyn spn::Network, decoding, batch_size| {
        let s = Sampler::new(
            model,
            SampleOptions {
                decoding,
                batch_size,
                ..Default::default()
            },
        )
        .unwrap();
        let jobs = [
            spn::sampler::CanvasJob::UpscaleDepth { image: &img },
            spn::sampler::CanvasJob::Complete {
                image: &img,
                known: &known,
            },
            spn::sampler::CanvasJob::UpscaleSize {
                image: &small,
                factor: None,
            },
            spn::sampler::CanvasJob::UpscaleSize {
                image: &small,
                factor: Some(3),
            },
        ];
        jobs.iter()
            .map(|j| {
                let r = s
                    .canvas(j, &[3], &mut no_progress(), &CancelToken::new())
                    .unwrap();
                r[0].image.to_rgb8().into_raw()
            })
            .collect::<Vec<_>>()
    };
    let reference = run(&p, Decoding::Naive, 1);
    assert_eq!(run(&p, Decoding::Incremental, 16), reference);
    assert_eq!(run(&p, Decoding::IncrementalTensor, 3), reference);
    assert_eq!(run(&host, Decoding::Incremental, 5), reference);
}

#[test]
fn naive_and_incremental_samplers_draw_the_same_images() {
    let p = model("tiny", 5);
    let gen = |decoding| {
        let s = Sampler::new(
            &p,
            SampleOptions {
                decoding,
                batch_size: 4,
                temperature: 1.0,
                positions_per_slice: None,
                overlap: None,
                host_embedder: true,
                ..Default::default()
            },
        )
        .unwrap();
        s.generate(&[1, 2, 3], &mut no_progress(), &CancelToken::new())
            .unwrap()
    };
    let naive = gen(Decoding::Naive);
    for decoding in [Decoding::Incremental, Decoding::IncrementalTensor] {
        assert!(
            gen(decoding).images.equal(&naive.images),
            "{decoding:?} drew other images than the naive sampler"
        );
    }
}

#[test]
fn same_seed_same_bytes_whatever_the_batch() {
    let p = model("tiny", 6);
    let run = |bs: usize, seeds: &[u64]| {
        let s = Sampler::new(
            &p,
            SampleOptions {
                batch_size: bs,
                ..Default::default()
            },
        )
        .unwrap();
        s.generate(seeds, &mut no_progress(), &CancelToken::new())
            .unwrap()
    };
    let a = run(5, &[10, 11, 12, 13, 14]);
    let b = run(2, &[10, 11, 12, 13, 14]);
    let c = run(1, &[12]);
    assert!(a.images.equal(&b.images), "batch size changed the images");
    assert!(
        a.images.get(2).equal(&c.images.get(0)),
        "an image depends on its batch"
    );
    assert!(
        !a.images.get(0).equal(&a.images.get(1)),
        "different seeds should give different images"
    );
    assert!((a.bits[2] - c.bits[0]).abs() < 1e-3);
    let again = run(5, &[10, 11, 12, 13, 14]);
    assert!(a.images.equal(&again.images));
}

#[test]
fn completion_keeps_every_known_sub_pixel() {
    for preset in ["tiny", "tiny-full"] {
        let p = model(preset, 7);
        let x = images(&p, 1, 8).get(0).to_kind(Kind::Uint8);
        let (h, w) = (p.config().height, p.config().width);
        let known = Tensor::rand([h, w], (Kind::Float, Device::Cpu)).gt(0.5);
        let s = Sampler::new(&p, SampleOptions::default()).unwrap();
        let out = s
            .complete(&x, &known, &[1, 2], &mut no_progress(), &CancelToken::new())
            .unwrap();
        for i in 0..2 {
            let y = out.images.get(i);
            let mask = known.unsqueeze(0).expand([3, h, w], false);
            assert!(
                y.masked_select(&mask).equal(&x.masked_select(&mask)),
                "{preset}: a known sub-pixel changed"
            );
        }
        // Unknown pixels are actually sampled (two seeds disagree somewhere).
        assert!(!out.images.get(0).equal(&out.images.get(1)));
        // Wrong mask size.
        let bad = Tensor::ones([h, w + 1], (Kind::Bool, Device::Cpu));
        assert!(matches!(
            s.complete(&x, &bad, &[1], &mut no_progress(), &CancelToken::new()),
            Err(Error::Input(_))
        ));
    }
}

#[test]
fn upscaling_keeps_what_it_must() {
    let p = model("tiny", 9);
    let (h, w, sc) = (p.config().height, p.config().width, p.config().scale);
    let s = Sampler::new(&p, SampleOptions::default()).unwrap();
    let x = images(&p, 1, 10).get(0).to_kind(Kind::Uint8);
    // Depth: the top 3 bits of every value are the input's.
    let out = s
        .upscale_depth(&x, &[3, 4], &mut no_progress(), &CancelToken::new())
        .unwrap();
    for i in 0..2 {
        let y = out.images.get(i).to_kind(Kind::Int64);
        assert!(y
            .divide_scalar_mode(32, "floor")
            .equal(&x.to_kind(Kind::Int64).divide_scalar_mode(32, "floor")));
    }
    // Size: the small image is slice 0 of the output, exactly.
    let small = images(&p, 1, 11)
        .get(0)
        .to_kind(Kind::Uint8)
        .slice(1, 0, h, sc)
        .slice(2, 0, w, sc)
        .contiguous();
    let out = s
        .upscale_size(&small, &[5], &mut no_progress(), &CancelToken::new())
        .unwrap();
    let y = out.images.get(0);
    assert!(y.slice(1, 0, h, sc).slice(2, 0, w, sc).equal(&small));
    // Wrong sizes are refused with a message naming the size needed.
    let err = s
        .upscale_size(&x, &[5], &mut no_progress(), &CancelToken::new())
        .err()
        .unwrap();
    assert!(err.to_string().contains("4x4"), "{err}");
    let full = model("tiny-full", 1);
    let sf = Sampler::new(&full, SampleOptions::default()).unwrap();
    assert!(sf
        .upscale_depth(&x, &[1], &mut no_progress(), &CancelToken::new())
        .is_err());
}

#[test]
fn bad_options_are_refused() {
    let p = model("tiny", 1);
    for t in [0.0, -1.0, f64::NAN] {
        assert!(Sampler::new(
            &p,
            SampleOptions {
                temperature: t,
                ..Default::default()
            }
        )
        .is_err());
    }
    let s = Sampler::new(&p, SampleOptions::default()).unwrap();
    assert!(s
        .generate(&[], &mut no_progress(), &CancelToken::new())
        .is_err());
}

#[test]
fn cancelling_from_another_thread_stops_within_a_few_rows() {
    let p = model("tiny", 2);
    let s = Sampler::new(
        &p,
        SampleOptions {
            batch_size: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let token = CancelToken::new();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t2 = token.clone();
    let canceller = std::thread::spawn(move || {
        rx.recv().unwrap();
        t2.cancel();
    });
    let mut rows_after = 0;
    let mut sent = false;
    let seeds: Vec<u64> = (0..20).collect();
    let r = s.generate(
        &seeds,
        &mut |pr| {
            if !sent && pr.done >= 5 {
                tx.send(()).unwrap();
                sent = true;
                // Give the other thread time to cancel.
                std::thread::sleep(std::time::Duration::from_millis(50));
            } else if sent {
                rows_after += 1;
            }
            true
        },
        &token,
    );
    canceller.join().unwrap();
    assert!(
        matches!(r, Err(Error::Cancelled)),
        "the job was not cancelled"
    );
    assert!(rows_after <= 1, "{rows_after} rows ran after cancel");
    // Returning false from the progress callback also cancels.
    let r = s.generate(&[1], &mut |_| false, &CancelToken::new());
    assert!(matches!(r, Err(Error::Cancelled)));
}

#[test]
fn sampled_first_sub_pixels_follow_the_models_softmax() {
    let p = model("tiny", 12);
    // Scale stage A's R head so the distribution is neither flat nor a spike: a biased sampler shows.
    tch::no_grad(|| {
        for (name, mut t) in p.named_weights() {
            if name.starts_with("a.head.out_r") {
                let _ = t.f_mul_scalar_(0.3).unwrap();
            }
        }
    });
    let temperature = 0.7;
    // The model's distribution of the very first sub-pixel (stage A, slice 0, pixel 0, R): it depends on
    // nothing, so any image gives it.
    let x = Tensor::zeros(
        [1, 3, p.config().height, p.config().width],
        (Kind::Int64, Device::Cpu),
    );
    let parts = p.decompose(&x).unwrap();
    let inputs = p.stage_inputs(&parts).unwrap();
    let k0 = Tensor::zeros([1], (Kind::Int64, Device::Cpu));
    let logits = tch::no_grad(|| p.stages()[0].logits(&inputs[0].0, None, &k0).unwrap());
    let probs = (logits.select(1, 0).select(2, 0).select(2, 0).get(0) / temperature)
        .softmax(-1, Kind::Double);
    let probs = Vec::<f64>::try_from(probs).unwrap();
    let levels = probs.len();
    let n = 3000usize;
    let s = Sampler::new(
        &p,
        SampleOptions {
            batch_size: 1000,
            temperature,
            ..Default::default()
        },
    )
    .unwrap();
    let seeds: Vec<u64> = (0..n as u64).collect();
    let out = s
        .generate(&seeds, &mut no_progress(), &CancelToken::new())
        .unwrap();
    let first = out
        .images
        .select(1, 0)
        .select(1, 0)
        .select(1, 0)
        .to_kind(Kind::Int64)
        .divide_scalar_mode(32, "floor");
    let first = Vec::<i64>::try_from(first).unwrap();
    let mut counts = vec![0f64; levels];
    for v in first {
        counts[v as usize] += 1.0;
    }
    let mut chi2 = 0.0;
    for (c, q) in counts.iter().zip(&probs) {
        let e = q * n as f64;
        chi2 += (c - e) * (c - e) / e.max(1e-9);
    }
    // 7 degrees of freedom: the 0.999 quantile is 24.3. A sampler off by one level, or one that ignored the
    // temperature, lands far above that with these peaked probabilities.
    assert!(
        chi2 < 24.3,
        "chi2 {chi2}: counts {counts:?} vs probs {probs:?}"
    );
    let max_p = probs.iter().cloned().fold(0.0, f64::max);
    let spread = probs.iter().filter(|&&q| q > 0.05).count();
    assert!(
        max_p > 0.3 && max_p < 0.8 && spread >= 4,
        "the test distribution should be uneven but spread: {probs:?}"
    );
}

/// The bits every job reports come from the sampler's own log-probabilities (slices it skips are scored in
/// one parallel pass); they must equal the exact parallel likelihood of the image it returns.
#[test]
fn reported_bits_are_the_exact_likelihood_of_the_output() {
    for preset in ["tiny", "tiny-full"] {
        let p = model(preset, 21);
        let (h, w, sc) = (p.config().height, p.config().width, p.config().scale);
        let x = images(&p, 1, 22).get(0).to_kind(Kind::Uint8);
        let known = Tensor::ones([h, w], (Kind::Bool, Device::Cpu)).triu(1);
        let small = x.slice(1, 0, h, sc).slice(2, 0, w, sc).contiguous();
        for decoding in [Decoding::Incremental, Decoding::IncrementalTensor] {
            let s = Sampler::new(
                &p,
                SampleOptions {
                    batch_size: 2,
                    decoding,
                    ..Default::default()
                },
            )
            .unwrap();
            let (np, c) = (&mut no_progress(), &CancelToken::new());
            let mut jobs = vec![
                ("generate", s.generate(&[1, 2, 3], np, c).unwrap()),
                ("complete", s.complete(&x, &known, &[4, 5], np, c).unwrap()),
            ];
            if p.config().msb_bits.is_some() {
                jobs.push(("upscale-size", s.upscale_size(&small, &[6], np, c).unwrap()));
                jobs.push(("upscale-depth", s.upscale_depth(&x, &[7], np, c).unwrap()));
            }
            for (job, out) in jobs {
                let exact = p
                    .likelihood(&out.images.to_kind(Kind::Int64))
                    .unwrap()
                    .total;
                for (i, b) in out.bits.iter().enumerate() {
                    let nll = exact.double_value(&[i as i64]) / std::f64::consts::LN_2;
                    assert!(
                        (b - nll).abs() < 1e-4 * nll,
                        "{preset} {decoding:?} {job} image {i}: reported {b} bits, exact {nll}"
                    );
                }
            }
        }
    }
}

/// The plain-Rust CPU engine (`decode::host`: embedder, step decoder, full pass, built from the weights as a
/// bundle stores them) against libtorch's full pass on every preset, every stage, at its first, middle and last
/// slice: every logit within 1e-4, or 4 parts in a million of its size where that is more.
#[test]
fn the_cpu_engine_matches_libtorch_on_every_preset() {
    for preset in PipelineConfig::PRESETS {
        let p = model(preset, 21);
        let x = images(&p, 1, 8);
        let parts = p.decompose(&x).unwrap();
        let host = p.host_weights().unwrap();
        let mut worst = 0f32;
        tch::no_grad(|| {
            for (si, (own, cond)) in p.stage_inputs(&parts).unwrap().iter().enumerate() {
                let net = &p.stages()[si];
                let hw = host.under(net.spec.kind.name());
                let embed = spn::decode::embed::HostEmbedder::new(&net.spec, &hw).unwrap();
                let step = CpuStepWeights::new(&net.spec, &hw).unwrap();
                let full = FullPass::new(&net.spec, &hw).unwrap();
                let (n_sl, first) = (net.spec.slices(), net.spec.first_slice);
                for k in [first, (first + n_sl) / 2, n_sl - 1] {
                    let kk = Tensor::from_slice(&[k]);
                    let reference = net.logits(own, cond.as_ref(), &kk).unwrap(); // (1, 3, L, h, w)
                                                                                  // (3, L, h * w) -> (h * w, 3, L)
                    let reference = Vec::<f32>::try_from(
                        reference
                            .get(0)
                            .flatten(2, 3)
                            .permute([2, 0, 1])
                            .contiguous()
                            .flatten(0, -1),
                    )
                    .unwrap();
                    let cond_cl = Vec::<f32>::try_from(
                        net.condition(own, cond.as_ref(), &kk)
                            .unwrap()
                            .flatten(2, 3)
                            .transpose(1, 2)
                            .contiguous()
                            .flatten(0, -1),
                    )
                    .unwrap();
                    let (h, w) = net.spec.slice_hw();
                    let (h, w) = (h as usize, w as usize);
                    let (ctx, proj) = embed.forward(&cond_cl, &[k as usize], h, w).unwrap();
                    let target = own.tensor().get(0).select(1, k).flatten(1, 2); // (3, h * w)
                    let t =
                        Vec::<i64>::try_from(target.transpose(0, 1).contiguous().flatten(0, -1))
                            .unwrap();
                    let vals: Vec<[i64; 3]> =
                        t.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
                    let copy = copy_rows(net, own, cond.as_ref(), &kk, true);
                    let raw = copy_rows(net, own, cond.as_ref(), &kk, false);
                    let fp = full.logits(&step, &ctx, &proj, &vals, &copy);
                    let mut dec = CpuSliceDecoder::new(&step, 1, &ctx, &proj)
                        .with_copy(&raw)
                        .unwrap();
                    let mut inc = Vec::with_capacity(reference.len());
                    for (pos, v) in vals.iter().enumerate() {
                        dec.features(pos);
                        for ch in 0..3 {
                            inc.extend_from_slice(dec.channel_logits(ch, &[*v]));
                        }
                        dec.commit(pos, &[*v]);
                    }
                    for got in [&fp, &inc] {
                        assert_eq!(got.len(), reference.len());
                        for (a, b) in got.iter().zip(&reference) {
                            // Slopes make logits of tens of nats, where f32 sums in another order
                            // differ by a few parts in a million.
                            worst = worst.max((a - b).abs() / (1.0 + 0.04 * b.abs()));
                        }
                    }
                }
            }
        });
        assert!(
            worst < 1e-4,
            "{preset}: the CPU engine's logits differ by {worst}"
        );
    }
}

/// The mean pick (`Pick::Mean`): deterministic whatever the seed, keeps what is known, and differs from a draw.
#[test]
fn the_mean_pick_is_deterministic_and_keeps_the_known() {
    let p = model("tiny", 9);
    let small = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(9, 6, |x, y| {
        image::Rgb([(x * 25) as u8, 200, (y * 40) as u8])
    }));
    let run = |pick, seed| {
        let s = Sampler::new(
            &p,
            SampleOptions {
                pick,
                ..Default::default()
            },
        )
        .unwrap();
        let job = spn::sampler::CanvasJob::UpscaleSize {
            image: &small,
            factor: None,
        };
        let r = s
            .canvas(&job, &[seed], &mut no_progress(), &CancelToken::new())
            .unwrap();
        r[0].image.to_rgb8()
    };
    let (a, b) = (
        run(spn::sampler::Pick::Mean, 1),
        run(spn::sampler::Pick::Mean, 2),
    );
    assert_eq!(a, b, "the mean pick does not depend on the seed");
    assert_ne!(a, run(spn::sampler::Pick::Sample, 1));
    let s = p.config().scale as u32;
    for (x, y, px) in small.to_rgb8().enumerate_pixels() {
        assert_eq!(a.get_pixel(s * x, s * y), px, "slice 0 kept at ({x}, {y})");
    }
}

/// Averaged draws (`SampleOptions::draws`): each pixel is the rounded mean of the image's draws, draw d from
/// the stream `draw_seed(seed, d)` (one draw: the plain image), whatever the batching; the input's pixels
/// stay exact; the mean pick and 0 draws are refused.
#[test]
fn averaged_draws_are_the_mean_of_the_draws_and_keep_the_known() {
    let p = model("tiny", 9);
    let small = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(9, 6, |x, y| {
        image::Rgb([(x * 25) as u8, 200, (y * 40) as u8])
    }));
    let job = spn::sampler::CanvasJob::UpscaleSize {
        image: &small,
        factor: Some(3),
    };
    let run = |draws, batch_size, seeds: &[u64]| {
        let s = Sampler::new(
            &p,
            SampleOptions {
                draws,
                batch_size,
                ..Default::default()
            },
        )
        .unwrap();
        let r = s
            .canvas(&job, seeds, &mut no_progress(), &CancelToken::new())
            .unwrap();
        r.iter().map(|c| c.image.to_rgb8()).collect::<Vec<_>>()
    };
    let seeds = [7u64, 8];
    let avg = run(3, 4, &seeds);
    assert_eq!(avg, run(3, 1, &seeds), "the batching changed the average");
    for (img, &seed) in avg.iter().zip(&seeds) {
        let one: Vec<_> = (0..3)
            .map(|d| run(1, 2, &[spn::sampler::draw_seed(seed, d)]).remove(0))
            .collect();
        assert_eq!(one[0], run(1, 2, &[seed])[0], "draw 0 is the plain image");
        assert_ne!(one[0], one[1], "the draws are independent");
        for (i, v) in img.as_raw().iter().enumerate() {
            let sum: u32 = one.iter().map(|o| o.as_raw()[i] as u32).sum();
            assert_eq!(*v as u32, (sum + 1) / 3, "seed {seed}, value {i}");
        }
        for (x, y, px) in small.to_rgb8().enumerate_pixels() {
            assert_eq!(img.get_pixel(3 * x, 3 * y), px, "input kept at ({x}, {y})");
        }
    }
    for (draws, pick) in [
        (0, spn::sampler::Pick::Sample),
        (spn::sampler::MAX_DRAWS + 1, spn::sampler::Pick::Sample),
        (2, spn::sampler::Pick::Mean),
    ] {
        let r = Sampler::new(
            &p,
            SampleOptions {
                draws,
                pick,
                ..Default::default()
            },
        );
        assert!(r.is_err(), "{draws} draws with {pick:?} accepted");
    }
}

/// Size upscaling by a factor F other than S (issue 15: 64x64 to 256x256 with an S = 8 model is F = 4): the
/// result is F times larger with every input pixel (colour and alpha) at (F*x, F*y); F = S is the default;
/// factors below 2 or above the limit are input errors that say what is allowed.
#[test]
fn upscaling_by_a_factor_keeps_every_input_pixel_at_its_place() {
    let p = model("tiny", 9);
    let small = image::DynamicImage::ImageRgba8(image::RgbaImage::from_fn(7, 5, |x, y| {
        image::Rgba([
            (x * 35) as u8,
            90,
            (y * 50) as u8,
            if x == 0 { 0 } else { 255 },
        ])
    }));
    let s = Sampler::new(&p, SampleOptions::default()).unwrap();
    let run = |factor| {
        let job = spn::sampler::CanvasJob::UpscaleSize {
            image: &small,
            factor,
        };
        s.canvas(&job, &[4], &mut no_progress(), &CancelToken::new())
            .map(|r| r[0].image.to_rgba8())
    };
    let scale = p.config().scale as u32;
    for f in [3u32, 2, scale + 1] {
        let up = run(Some(f)).unwrap();
        assert_eq!(up.dimensions(), (7 * f, 5 * f), "factor {f}");
        for (x, y, px) in small.to_rgba8().enumerate_pixels() {
            assert_eq!(
                up.get_pixel(f * x, f * y),
                px,
                "factor {f}: input pixel ({x}, {y})"
            );
        }
        // Between the input pixels the model draws (and alpha is interpolated): not a copy of the input.
        assert!(
            up.pixels().any(|q| q[3] > 0 && q[3] < 255),
            "factor {f}: alpha interpolated"
        );
    }
    assert_eq!(
        run(None).unwrap(),
        run(Some(scale)).unwrap(),
        "the default is S"
    );
    for bad in [0, 1, spn::sampler::MAX_UPSCALE_FACTOR + 1] {
        let e = run(Some(bad)).unwrap_err();
        assert!(
            matches!(e, spn::Error::Input(_)) && e.to_string().contains("from 2 to"),
            "factor {bad}: {e}"
        );
    }
}
