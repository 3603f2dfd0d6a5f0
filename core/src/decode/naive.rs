//! The naive engine: a full decoder pass over the whole slice for every position. Slow (h*w passes per
//! slice) and obviously right: the reference the incremental engines are held to.
use super::neighbours::CopyRows;
use super::torch::{copy_at, head_logits, pixels};
use super::SliceDecoding;
use crate::error::Result;
use crate::model::{SpnNet, Values};
use tch::Tensor;

pub struct NaiveSlice<'a> {
    net: &'a SpnNet,
    ctx: Tensor,
    /// The slice's values `(B, 3, h, w)`, with every committed pixel in place.
    values: Tensor,
    feats: Option<Tensor>,
    logits: Vec<f32>,
    /// The group's copy rows, and those at the current position `(G, 1, 1, E, 3)`.
    copy: Option<CopyRows>,
    copy_at: Option<Tensor>,
}

impl<'a> NaiveSlice<'a> {
    pub fn new(
        net: &'a SpnNet,
        ctx: Tensor,
        values: Tensor,
        copy: Option<CopyRows>,
    ) -> Result<Self> {
        let mut own = values.f_empty_like()?;
        own.f_copy_(&values)?;
        Ok(Self {
            net,
            ctx,
            values: own,
            feats: None,
            logits: Vec::new(),
            copy,
            copy_at: None,
        })
    }
}

impl SliceDecoding for NaiveSlice<'_> {
    fn features(&mut self, pos: usize) -> Result<()> {
        let (b, _, _, w) = self.values.size4()?;
        let x = Values::Hard(self.values.shallow_clone()).normalized(self.net.spec.levels())?;
        let trunk = self
            .net
            .head
            .trunk(&self.net.decoder.forward(&x, &self.ctx)?)?; // (B, h, w, D)
        let pos = pos as i64;
        self.feats = Some(
            trunk
                .f_select(1, pos / w)?
                .f_select(1, pos % w)?
                .f_view([b, 1, 1, -1])?,
        );
        self.copy_at = copy_at(self.copy.as_mut(), pos as usize, self.values.device())?;
        Ok(())
    }

    fn channel_logits(&mut self, ch: usize, chosen: &[[i64; 3]]) -> Result<&[f32]> {
        head_logits(
            self.net,
            self.feats.as_ref(),
            ch,
            chosen,
            self.copy_at.as_ref(),
            &mut self.logits,
        )
    }

    fn commit(&mut self, pos: usize, values: &[[i64; 3]]) -> Result<()> {
        if let Some(rows) = self.copy.as_mut() {
            rows.commit(pos, values);
        }
        let (_, _, _, w) = self.values.size4()?;
        let px = pixels(values, self.values.device())?; // (B, 3)
        let (r, c) = (pos as i64 / w, pos as i64 % w);
        self.values.f_select(3, c)?.f_select(2, r)?.f_copy_(&px)?;
        Ok(())
    }
}
