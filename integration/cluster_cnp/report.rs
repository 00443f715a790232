//! The results: per test and sub-test passed, failed or skipped, with probe counts; SCTP probes
//! are skipped (this kernel has no SCTP sockets), a sub-test with only SCTP probes is skipped,
//! a test whose sub-tests are all skipped is skipped.

use std::fmt::Write as _;

/// Probe counts of a sub-test.
#[derive(Debug, Clone, Copy, Default)]
pub struct Probes {
    /// Gave the expected verdict.
    pub passed: usize,
    /// Of those, after a retry.
    pub retried: usize,
    /// Did not.
    pub failed: usize,
    /// SCTP, not run.
    pub skipped: usize,
}

impl Probes {
    fn add(&mut self, other: Probes) {
        self.passed += other.passed;
        self.retried += other.retried;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }

    fn verdict(&self) -> Verdict {
        if self.failed > 0 {
            Verdict::Failed
        } else if self.passed == 0 {
            Verdict::Skipped
        } else {
            Verdict::Passed
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Passed,
    Failed,
    Skipped,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Passed => "PASS",
            Verdict::Failed => "FAIL",
            Verdict::Skipped => "SKIP",
        }
    }
}

/// Every test's sub-tests, in suite order.
#[derive(Debug, Default)]
pub struct Report {
    tests: Vec<(String, Vec<(String, Probes)>)>,
    failures: Vec<String>,
}

/// Passed, failed and skipped counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Skipped.
    pub skipped: usize,
}

impl Counts {
    fn add(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Passed => self.passed += 1,
            Verdict::Failed => self.failed += 1,
            Verdict::Skipped => self.skipped += 1,
        }
    }
}

impl Report {
    /// Starts a test.
    pub fn test(&mut self, name: &str, subtests: &[String]) {
        let subtests = subtests
            .iter()
            .map(|s| (s.clone(), Probes::default()))
            .collect();
        self.tests.push((name.to_owned(), subtests));
    }

    /// Adds a probe's result to the current test's sub-test.
    pub fn probe(&mut self, subtest: &str, add: Probes) {
        if let Some((_, subtests)) = self.tests.last_mut()
            && let Some((_, probes)) = subtests.iter_mut().find(|(name, _)| name == subtest)
        {
            probes.add(add);
        }
    }

    /// Records a failure's details.
    pub fn failure(&mut self, text: String) {
        self.failures.push(text);
    }

    /// Tests, sub-tests and probes.
    pub fn totals(&self) -> (Counts, Counts, Probes) {
        let (mut tests, mut subtests, mut probes) =
            (Counts::default(), Counts::default(), Probes::default());
        for (_, subs) in &self.tests {
            let mut test = Probes::default();
            let mut any_failed = false;
            let mut any_passed = false;
            for (_, p) in subs {
                let verdict = p.verdict();
                subtests.add(verdict);
                any_failed |= verdict == Verdict::Failed;
                any_passed |= verdict == Verdict::Passed;
                test.add(*p);
            }
            tests.add(if any_failed {
                Verdict::Failed
            } else if any_passed {
                Verdict::Passed
            } else {
                Verdict::Skipped
            });
            probes.add(test);
        }
        (tests, subtests, probes)
    }

    /// The table: one line per sub-test under its test, the failures, the totals.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (test, subs) in &self.tests {
            let mut sum = Probes::default();
            subs.iter().for_each(|(_, p)| sum.add(*p));
            let _ = writeln!(
                out,
                "{} {test}: probes {} passed, {} failed, {} skipped (SCTP)",
                sum.verdict().word(),
                sum.passed,
                sum.failed,
                sum.skipped
            );
            for (name, p) in subs {
                let _ = writeln!(
                    out,
                    "    {} {name}: {} passed{}, {} failed, {} skipped",
                    p.verdict().word(),
                    p.passed,
                    if p.retried > 0 {
                        format!(" ({} after a retry)", p.retried)
                    } else {
                        String::new()
                    },
                    p.failed,
                    p.skipped
                );
            }
        }
        for failure in &self.failures {
            let _ = writeln!(out, "FAILED {failure}");
        }
        let (tests, subtests, probes) = self.totals();
        let _ = writeln!(
            out,
            "tests: {} passed, {} failed, {} skipped; sub-tests: {} passed, {} failed, {} skipped; \
             probes: {} passed ({} after a retry), {} failed, {} skipped (SCTP: no SCTP sockets on this kernel)",
            tests.passed,
            tests.failed,
            tests.skipped,
            subtests.passed,
            subtests.failed,
            subtests.skipped,
            probes.passed,
            probes.retried,
            probes.failed,
            probes.skipped
        );
        out
    }
}
