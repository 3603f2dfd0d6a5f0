//! The fallible layer constructors of `model::layers` make what tch's `nn` constructors make. Its own test
//! binary: the comparison seeds libtorch's global generator, which tests running beside it in one process
//! would draw from.
use spn::model::layers::{new_conv2d, new_embedding, new_layer_norm, new_linear, new_randn};
use tch::{nn, Tensor};

/// The fallible constructors make what tch's do: the same names, shapes and, for a seed, values (so
/// training from a seed is unchanged).
#[test]
fn layers_are_made_as_tch_makes_them() {
    let make = |ours: bool| {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let r = vs.root();
        if ours {
            new_conv2d(&(&r / "c"), 4, 6, 3).unwrap();
            new_linear(&(&r / "l"), 5, 7).unwrap();
            new_embedding(&(&r / "e"), 3, 4).unwrap();
            new_layer_norm(&(&r / "n"), 4).unwrap();
            let _ = new_randn(&r, "p", &[3, 4], 0.02).unwrap();
        } else {
            nn::conv2d(&r / "c", 4, 6, 3, Default::default());
            nn::linear(&r / "l", 5, 7, Default::default());
            nn::embedding(&r / "e", 3, 4, Default::default());
            nn::layer_norm(&r / "n", vec![4], Default::default());
            let normal = nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            };
            let _ = r.var("p", &[3, 4], normal);
        }
        let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let (ours, theirs) = (make(true), make(false));
    assert_eq!(ours.len(), 8);
    assert_eq!(ours.len(), theirs.len());
    for ((n, a), (m, b)) in ours.iter().zip(&theirs) {
        assert_eq!(n, m);
        assert!(a.equal(b), "{n}");
        assert_eq!(a.requires_grad(), b.requires_grad(), "{n}");
    }
}
