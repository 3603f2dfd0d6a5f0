//! Weights on the host: the tensors of a bundle as plain `f32` arrays, read with the `safetensors` crate
//! (`bundle.rs`), so that the CPU engine (`decode::cpu`, `decode::embed`, `decode::full`) runs without
//! libtorch (issue 18, docs/design.md section 4). The same arrays build the CPU engine from a libtorch
//! `Pipeline`, so the engine has one constructor whichever way the weights arrived.
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// A dense row-major `f32` array.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        if shape.iter().product::<usize>() != data.len() {
            return Err(Error::Other(format!(
                "shape {shape:?} does not hold {} values",
                data.len()
            )));
        }
        Ok(Self { shape, data })
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    fn strides(&self) -> Vec<usize> {
        let mut s = vec![1; self.shape.len()];
        for i in (0..self.shape.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * self.shape[i + 1];
        }
        s
    }

    /// The view `dims` of this array (any strides), copied out row-major.
    fn gather(&self, shape: Vec<usize>, strides: &[usize], offset: usize) -> HostTensor {
        let n = shape.iter().product();
        let mut data = Vec::with_capacity(n);
        let mut idx = vec![0usize; shape.len()];
        for _ in 0..n {
            let at: usize = offset + idx.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
            data.push(self.data[at]);
            for d in (0..shape.len()).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        HostTensor { shape, data }
    }

    /// Dimensions reordered: dimension `i` of the result is dimension `order[i]` of this array.
    pub fn permute(&self, order: &[usize]) -> HostTensor {
        let st = self.strides();
        self.gather(
            order.iter().map(|&d| self.shape[d]).collect(),
            &order.iter().map(|&d| st[d]).collect::<Vec<_>>(),
            0,
        )
    }

    /// Elements `start..start + len` of dimension `dim`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> HostTensor {
        let st = self.strides();
        let mut shape = self.shape.clone();
        shape[dim] = len;
        self.gather(shape, &st, start * st[dim])
    }

    /// Element `i` of dimension `dim`, that dimension removed.
    pub fn select(&self, dim: usize, i: usize) -> HostTensor {
        let mut t = self.narrow(dim, i, 1);
        t.shape.remove(dim);
        t
    }

    /// A linear layer's `(out, in)` weight as an `(in, out)` row-major matrix.
    pub fn transposed(&self) -> HostTensor {
        self.permute(&[1, 0])
    }
}

/// Named weights, as a bundle stores them (`a.decoder.blocks.0.conv.weight`).
#[derive(Default, Debug)]
pub struct Weights(pub BTreeMap<String, HostTensor>);

impl Weights {
    /// The weight `name`, which must have shape `shape`: a bundle whose weights do not fit its config is
    /// refused here, before anything reads past an array.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<&HostTensor> {
        let t = self.0.get(name).ok_or_else(|| {
            Error::Other(format!(
                "missing weight '{name}': the bundle does not match its config"
            ))
        })?;
        if t.shape != shape {
            return Err(Error::Other(format!(
                "weight '{name}' has shape {:?}, expected {shape:?}",
                t.shape
            )));
        }
        Ok(t)
    }

    /// The weights under `prefix.` with the prefix removed.
    pub fn under(&self, prefix: &str) -> Weights {
        let p = format!("{prefix}.");
        Weights(
            self.0
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(&p).map(|k| (k.to_string(), v.clone())))
                .collect(),
        )
    }
}

#[cfg(feature = "torch")]
impl HostTensor {
    /// A libtorch tensor (on the CPU) of this array.
    pub fn to_tensor(&self) -> Result<tch::Tensor> {
        // Every dimension was checked to fit an i64 when the bundle was read (`bundle::check_tensors`).
        let shape: Vec<i64> = self.shape.iter().map(|&d| d as i64).collect();
        Ok(tch::Tensor::f_from_slice(&self.data)?.f_view(shape.as_slice())?)
    }

    /// The array of a libtorch tensor on any device, as `f32`.
    pub fn from_tensor(t: &tch::Tensor) -> Result<Self> {
        let t = t
            .f_detach()?
            .f_to_device(tch::Device::Cpu)?
            .f_to_kind(tch::Kind::Float)?
            .f_contiguous()?;
        let shape = t.size().iter().map(|&d| d as usize).collect();
        Self::new(shape, Vec::<f32>::try_from(t.f_flatten(0, -1)?)?)
    }
}

/// Named libtorch tensors as host arrays, for `bundle::write` and the CPU engine.
#[cfg(feature = "torch")]
pub fn from_tensors(named: &[(String, tch::Tensor)]) -> Result<Vec<(String, HostTensor)>> {
    named
        .iter()
        .map(|(n, t)| Ok((n.clone(), HostTensor::from_tensor(t)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_copy_the_right_elements() {
        let t = HostTensor::new(vec![2, 3, 4], (0..24).map(|v| v as f32).collect()).unwrap();
        let p = t.permute(&[2, 0, 1]);
        assert_eq!(p.shape, [4, 2, 3]);
        // p[k][i][j] = t[i][j][k] = 12 i + 4 j + k
        assert_eq!(p.data[(3 * 2 + 1) * 3 + 2], (12 + 8 + 3) as f32);
        let n = t.narrow(1, 1, 2);
        assert_eq!(n.shape, [2, 2, 4]);
        assert_eq!(n.data[..4], [4.0, 5.0, 6.0, 7.0]);
        assert_eq!(n.data[8..12], [16.0, 17.0, 18.0, 19.0]);
        let s = t.select(2, 3);
        assert_eq!(s.shape, [2, 3]);
        assert_eq!(s.data, [3.0, 7.0, 11.0, 15.0, 19.0, 23.0]);
        assert!(HostTensor::new(vec![2, 2], vec![0.0; 3]).is_err());
    }
}
