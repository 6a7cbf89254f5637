//! The activity catalogue and the rules that pick activities for a
//! relationship from its recent reports.

use inside_schemas::{Activity, Report};

pub struct CatalogueEntry {
    pub id: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub minutes: u32,
}

const fn entry(
    id: &'static str,
    title: &'static str,
    description: &'static str,
    minutes: u32,
) -> CatalogueEntry {
    CatalogueEntry {
        id,
        title,
        description,
        minutes,
    }
}

pub const ACTIVITIES: &[CatalogueEntry] = &[
    entry("paced-breathing", "Paced breathing together", "Sit facing each other and breathe in for four counts, out for six, for five minutes before you talk.", 5),
    entry("slow-talk-timer", "The slow-talk timer", "Pick a topic; each of you speaks for one minute at half your usual pace while the other listens.", 10),
    entry("speaker-listener", "Speaker–listener technique", "One holds the floor and speaks; the other paraphrases what they heard before replying. Swap every few minutes.", 20),
    entry("talking-object", "The talking object", "Only the person holding a chosen object may speak; pass it when you have finished your thought.", 15),
    entry("two-minute-turns", "Two-minute turns", "Take strict two-minute turns on a question that matters to you both; a phone timer keeps it fair.", 15),
    entry("question-ladder", "The question ladder", "The quieter partner asks three open questions in a row, each going one step deeper than the last.", 15),
    entry("reflective-listening", "Reflective listening drill", "After your partner speaks, say back the feeling you heard (“you felt…”) before anything else.", 10),
    entry("pause-signal", "Agree a pause signal", "Choose a gentle hand sign that means “let me finish”; practise using it playfully in a short talk.", 5),
    entry("appreciation-round", "Appreciation round", "Take turns naming three specific things you appreciated about each other this week.", 10),
    entry("daily-check-in", "Ten-minute daily check-in", "Each evening, each of you shares one high, one low and one need for tomorrow.", 10),
    entry("high-low", "High–low–buffalo", "Share a high point, a low point and one surprising thing from your day.", 10),
    entry("36-questions", "The 36 questions", "Work through a few of Arthur Aron's 36 questions, taking turns to answer first.", 30),
    entry("gratitude-letters", "Gratitude letters", "Write each other a short letter of thanks and read it aloud slowly.", 20),
    entry("walk-and-talk", "Walk and talk", "Talk side by side on a walk: less eye contact lowers the pressure and slows the pace.", 30),
];

/// Activities per suggestion list.
const PICK: usize = 4;

/// Picks activities for a relationship from its recent reports (newest first),
/// each with the reason it was chosen.
pub fn suggest_activities(reports: &[Report]) -> Vec<Activity> {
    let mut picks: Vec<Activity> = Vec::new();
    let mut add = |id: &str, reason: String| {
        if picks.len() < PICK && !picks.iter().any(|a| a.id == id) {
            if let Some(e) = ACTIVITIES.iter().find(|e| e.id == id) {
                picks.push(Activity {
                    id: e.id.to_string(),
                    title: e.title.to_string(),
                    description: e.description.to_string(),
                    minutes: e.minutes,
                    reason,
                });
            }
        }
    };
    if reports.is_empty() {
        add(
            "daily-check-in",
            "A gentle start while there are no session reports yet.".into(),
        );
        add(
            "high-low",
            "An easy way to open up before your first coached talk.".into(),
        );
        add(
            "36-questions",
            "Builds closeness from the first conversation.".into(),
        );
        add(
            "appreciation-round",
            "Starting with appreciation makes harder talks easier.".into(),
        );
        return picks;
    }
    let n = reports.len();
    let count = |t: &str| -> u64 {
        reports
            .iter()
            .map(|r| r.nudges.by_type.get(t).copied().unwrap_or(0))
            .sum()
    };
    let slow = count("SLOW_DOWN");
    let finish = count("LET_PARTNER_FINISH");
    let balance = count("BALANCE_TALK_TIME");
    let overlap = mean(
        reports
            .iter()
            .flat_map(|r| r.speakers.iter().map(|s| s.overlap_ratio)),
    );
    let max_share = mean(
        reports
            .iter()
            .map(|r| r.speakers.iter().map(|s| s.talk_share).fold(0.0, f64::max)),
    );

    let mut needs: Vec<(u64, &str)> =
        vec![(slow, "pace"), (finish, "finish"), (balance, "balance")];
    needs.sort_by_key(|n| std::cmp::Reverse(n.0));
    for (times, need) in needs {
        if times == 0 {
            continue;
        }
        match need {
            "pace" => {
                let why = format!("{times} “slow down” nudges in your last {n} session(s): practising a calmer pace helps.");
                add("paced-breathing", why.clone());
                add("slow-talk-timer", why);
            }
            "finish" => {
                let why = format!(
                    "{times} “let your partner finish” nudges in your last {n} session(s)."
                );
                add("speaker-listener", why.clone());
                add("pause-signal", why);
            }
            _ => {
                let why = format!("{times} talk-time balance nudges in your last {n} session(s).");
                add("two-minute-turns", why.clone());
                add("question-ladder", why);
            }
        }
    }
    if overlap > 0.2 {
        add(
            "talking-object",
            format!(
                "You talked over each other {:.0}% of the time on average.",
                overlap * 100.0
            ),
        );
    }
    if max_share > 0.65 {
        add(
            "two-minute-turns",
            format!(
                "One voice held {:.0}% of the talk time on average.",
                max_share * 100.0
            ),
        );
    }
    let total_nudges: u64 = reports.iter().map(|r| r.nudges.total).sum();
    if total_nudges == 0 {
        add(
            "appreciation-round",
            format!("No nudges in your last {n} session(s): celebrate how well you talk."),
        );
        add(
            "gratitude-letters",
            "Your conversations flow well; deepen them with gratitude.".into(),
        );
    }
    add(
        "reflective-listening",
        "A habit that helps every conversation.".into(),
    );
    add(
        "walk-and-talk",
        "A relaxed setting for your next talk.".into(),
    );
    add(
        "daily-check-in",
        "Small daily talks keep the big ones easy.".into(),
    );
    picks
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .filter(|v| v.is_finite())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}
