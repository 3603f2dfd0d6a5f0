use spn::model::incremental::{SliceDecoder, StepWeights};
use spn::model::Values;
use spn::{Pipeline, PipelineConfig};
use std::time::Instant;
use tch::{Device, Kind, Tensor};
fn main() {
    let preset = std::env::args().nth(1).unwrap_or("emoji".into());
    let b: i64 = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(32);
    tch::manual_seed(0);
    let mut c = PipelineConfig::preset(&preset).unwrap();
    if std::env::var("NOATT").is_ok() {
        c.net.attention_every = 0;
    }
    if let Ok(v) = std::env::var("BLOCKS") {
        c.net.decoder_blocks = v.parse().unwrap();
    }
    let p = Pipeline::new(c, Device::Cpu).unwrap();
    let _g = tch::no_grad_guard();
    let net = &p.stages[2];
    let s = &net.spec;
    let (h, w) = s.slice_hw();
    let own = Values::Hard(Tensor::zeros(
        [b, 3, s.slices(), h, w],
        (Kind::Int64, Device::Cpu),
    ));
    let cond = Some(Values::Hard(Tensor::zeros(
        [b, 3, s.slices(), h, w],
        (Kind::Int64, Device::Cpu),
    )));
    let k = Tensor::full([b], 1, (Kind::Int64, Device::Cpu));
    let t = Instant::now();
    for _ in 0..5 {
        let _ = net.context(&own, cond.as_ref(), &k).unwrap();
    }
    println!("context: {:.2} ms", t.elapsed().as_secs_f64() * 1e3 / 5.0);
    let ctx = net.context(&own, cond.as_ref(), &k).unwrap();
    let wts = StepWeights::new(net).unwrap();
    let px = Tensor::zeros([b, 3], (Kind::Int64, Device::Cpu));
    let t = Instant::now();
    let mut dec = SliceDecoder::new(net, &wts, &ctx).unwrap();
    println!("new: {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
    let (mut tf, mut th, mut tc) = (0.0, 0.0, 0.0);
    for pos in 0..h * w {
        let t = Instant::now();
        let f = dec.features(pos).unwrap();
        tf += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut chosen = vec![];
        for ch in 0..3 {
            let l = net
                .head
                .channel_logits(&f, ch, &chosen)
                .unwrap()
                .view([b, -1]);
            let v = l.argmax(-1, false);
            chosen.push(Values::Hard(v.view([b, 1, 1])));
        }
        th += t.elapsed().as_secs_f64();
        let t = Instant::now();
        dec.commit(pos, &px).unwrap();
        tc += t.elapsed().as_secs_f64();
    }
    let n = (h * w) as f64;
    println!(
        "per step: features {:.3} ms, head {:.3} ms, commit {:.3} ms",
        tf * 1e3 / n,
        th * 1e3 / n,
        tc * 1e3 / n
    );
}
