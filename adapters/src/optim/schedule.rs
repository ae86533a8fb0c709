//! Learning-rate schedule: linear warm-up, then cosine decay to a floor.

/// Linear warm-up over `warmup` steps to `base_lr`, then cosine decay to `min_lr` at `total`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schedule {
    /// Peak learning rate.
    pub base_lr: f32,
    /// Final learning rate.
    pub min_lr: f32,
    /// Warm-up steps.
    pub warmup: u32,
    /// Total optimizer steps.
    pub total: u32,
}

impl Schedule {
    /// A constant learning rate.
    pub fn constant(lr: f32) -> Self {
        Self {
            base_lr: lr,
            min_lr: lr,
            warmup: 0,
            total: 1,
        }
    }

    /// The learning rate at optimizer step `step` (0-based).
    pub fn lr_at(&self, step: u32) -> f32 {
        if step < self.warmup {
            return self.base_lr * (step + 1) as f32 / self.warmup as f32;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f32 / span as f32).min(1.0);
        let cos = 0.5 * (1.0 + (std::f32::consts::PI * progress).cos());
        self.min_lr + (self.base_lr - self.min_lr) * cos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays_to_the_floor() {
        let s = Schedule {
            base_lr: 1.0,
            min_lr: 0.1,
            warmup: 4,
            total: 14,
        };
        assert_eq!(s.lr_at(0), 0.25);
        assert_eq!(s.lr_at(3), 1.0);
        assert!((s.lr_at(4) - 1.0).abs() < 1e-6);
        assert!((s.lr_at(9) - 0.55).abs() < 1e-6);
        assert!((s.lr_at(14) - 0.1).abs() < 1e-6);
        assert!((s.lr_at(100) - 0.1).abs() < 1e-6);
        assert!(s.lr_at(5) > s.lr_at(6));
    }
}
