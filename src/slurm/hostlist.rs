//! Slurm host lists (`SLURM_JOB_NODELIST`): `node[01-03,7],gpu1` expanded
//! to node names, in order, as `scontrol show hostnames` does. Ranges keep
//! the zero padding of their lower bound (`[08-10]` is `08 09 10`); several
//! bracket groups in one name expand left to right (`r[1-2]n[1-2]` is `r1n1
//! r1n2 r2n1 r2n2`).

/// The most names one list may expand to: a typo like `n[1-999999999]`
/// is an error, not an allocation of the machine's memory.
const MAX_NAMES: usize = 1_000_000;

/// Expands a host list; `Err` says what is wrong with it.
pub fn expand(list: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in split_top(list)? {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let mut names = vec![String::new()];
        let mut rest = item;
        while !rest.is_empty() {
            match rest.find('[') {
                None => {
                    for n in &mut names {
                        n.push_str(rest);
                    }
                    rest = "";
                }
                Some(open) => {
                    let close = rest[open..]
                        .find(']')
                        .map(|c| open + c)
                        .ok_or_else(|| format!("`{item}`: `[` without `]`"))?;
                    let prefix = &rest[..open];
                    let values = ranges(&rest[open + 1..close], item)?;
                    if names.len().saturating_mul(values.len()) > MAX_NAMES {
                        return Err(format!("`{item}`: more than {MAX_NAMES} names"));
                    }
                    names = names
                        .iter()
                        .flat_map(|n| values.iter().map(move |v| format!("{n}{prefix}{v}")))
                        .collect();
                    rest = &rest[close + 1..];
                }
            }
        }
        out.extend(names);
        if out.len() > MAX_NAMES {
            return Err(format!("`{list}`: more than {MAX_NAMES} names"));
        }
    }
    Ok(out)
}

/// Splits at commas outside brackets.
fn split_top(list: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in list.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            '[' => return Err(format!("`{list}`: nested `[`")),
            ']' if depth == 1 => depth = 0,
            ']' => return Err(format!("`{list}`: `]` without `[`")),
            ',' if depth == 0 => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("`{list}`: `[` without `]`"));
    }
    parts.push(&list[start..]);
    Ok(parts)
}

/// `1-3,07` → `1 2 3 07`.
fn ranges(inside: &str, item: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for r in inside.split(',') {
        let r = r.trim();
        let bad = || format!("`{item}`: `{r}` is not a number or a range like `1-4`");
        let (lo, hi) = r.split_once('-').unwrap_or((r, r));
        if lo.is_empty()
            || hi.is_empty()
            || !lo.bytes().chain(hi.bytes()).all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let (a, b): (u64, u64) = (
            lo.parse().map_err(|_| bad())?,
            hi.parse().map_err(|_| bad())?,
        );
        if b < a {
            return Err(format!("`{item}`: `{r}` runs backwards"));
        }
        if b - a >= MAX_NAMES as u64 {
            return Err(format!("`{item}`: more than {MAX_NAMES} names"));
        }
        let width = if lo.len() > 1 && lo.starts_with('0') {
            lo.len()
        } else {
            0
        };
        out.extend((a..=b).map(|n| format!("{n:0width$}")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn names(s: &str) -> Vec<String> {
        expand(s).expect("expands")
    }

    #[test]
    fn lists_expand_as_scontrol_does() {
        assert_eq!(names("node1"), ["node1"]);
        assert_eq!(names("node[1-3]"), ["node1", "node2", "node3"]);
        assert_eq!(names("n[1,3-4],gpu7"), ["n1", "n3", "n4", "gpu7"]);
        assert_eq!(names("c[08-10]"), ["c08", "c09", "c10"]);
        assert_eq!(names("c[098-101]"), ["c098", "c099", "c100", "c101"]);
        assert_eq!(names("r[1-2]n[1-2]"), ["r1n1", "r1n2", "r2n1", "r2n2"]);
        assert_eq!(names("a[1-2]-x,b"), ["a1-x", "a2-x", "b"]);
        assert!(names("").is_empty());
    }

    #[test]
    fn bad_lists_say_what_is_wrong() {
        for (list, why) in [
            ("n[1-3", "`[` without `]`"),
            ("n1-3]", "`]` without `[`"),
            ("n[3-1]", "runs backwards"),
            ("n[a-b]", "not a number"),
            ("n[[1]]", "nested"),
            ("n[1-999999999]", "more than"),
        ] {
            let e = expand(list).expect_err(list);
            assert!(e.contains(why), "{list}: {e}");
        }
    }
}
