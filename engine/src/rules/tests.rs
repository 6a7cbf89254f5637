//! Table-driven tests of every nudge rule and its edges: NaN, infinities, negatives, exactly
//! at the threshold.

use super::*;

/// (speaking_rate, overlap_ratio, expected (type, intensity))
type FrameCase = (f64, f64, Option<(NudgeType, u8)>);

fn frame(rate: f64, overlap: f64) -> FeatureFrame {
    FeatureFrame {
        timestamp_ms: 1_000,
        speaking_rate: rate,
        overlap_ratio: overlap,
        seq: Some(7),
        received_ms: None,
    }
}

#[test]
fn frame_rules_table() {
    let p = NudgePolicy::default();
    // (speaking_rate, overlap_ratio, expected (type, intensity))
    let cases: &[FrameCase] = &[
        (0.0, 0.0, None),
        (2.9, 0.29, None),
        (3.0, 0.3, None), // exactly at the thresholds: no nudge
        (3.01, 0.0, Some((NudgeType::SlowDown, 1))),
        (3.75, 0.0, Some((NudgeType::SlowDown, 2))),
        (4.5, 0.0, Some((NudgeType::SlowDown, 3))),
        (100.0, 0.0, Some((NudgeType::SlowDown, 3))),
        (0.0, 0.31, Some((NudgeType::LetPartnerFinish, 1))),
        (0.0, 0.375, Some((NudgeType::LetPartnerFinish, 2))),
        (0.0, 1.0, Some((NudgeType::LetPartnerFinish, 3))),
        (3.3, 0.6, Some((NudgeType::LetPartnerFinish, 3))), // overlap further over wins
        (6.0, 0.33, Some((NudgeType::SlowDown, 3))),        // rate further over wins
        (f64::NAN, 0.0, None),
        (f64::INFINITY, 0.0, None),
        (-5.0, 0.0, None),
        (0.0, f64::NAN, None),
        (0.0, f64::NEG_INFINITY, None),
        (0.0, -0.5, None),
        (f64::NAN, 0.9, Some((NudgeType::LetPartnerFinish, 3))),
    ];
    for &(rate, overlap, want) in cases {
        let got = p
            .evaluate(&frame(rate, overlap))
            .map(|n| (n.nudge_type, n.intensity));
        assert_eq!(got, want, "rate={rate} overlap={overlap}");
    }
}

#[test]
fn nudge_echoes_the_frame_it_came_from() {
    let n = NudgePolicy::default().evaluate(&frame(5.0, 0.0)).unwrap();
    assert_eq!(n.frame_seq, Some(7));
    assert_eq!(n.frame_timestamp_ms, Some(1_000));
    assert!(!n.message.is_empty());
}

#[test]
fn balance_rule_table() {
    let p = NudgePolicy::default();
    let cases: &[(f64, f64, Option<u8>)] = &[
        (20.0, 25.0, None),    // not enough talk yet
        (35.0, 50.0, None),    // exactly 70 %
        (36.0, 50.0, Some(1)), // 72 %
        (40.0, 50.0, Some(2)), // 80 %
        (48.0, 50.0, Some(3)), // 96 %
        (f64::NAN, 50.0, None),
        (10.0, f64::INFINITY, None),
        (-1.0, 50.0, None),
    ];
    for &(own, total, want) in cases {
        let got = p.evaluate_balance(own, total).map(|n| {
            assert_eq!(n.nudge_type, NudgeType::BalanceTalkTime);
            n.intensity
        });
        assert_eq!(got, want, "own={own} total={total}");
    }
}
