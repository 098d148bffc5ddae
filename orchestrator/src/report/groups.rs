//! The dataset groups of the VTAB-1k table: the 19 tasks' fixed groups (natural, specialized,
//! structured) under the names they go by, the order papers print them in, and the order of
//! groups. Names only: no records, no files.

pub const NATURAL: &str = "natural";
pub const SPECIALIZED: &str = "specialized";
pub const STRUCTURED: &str = "structured";
/// A dataset with no group: shown in the table, in no group mean nor average.
pub const OTHER: &str = "other";

/// The 19 VTAB-1k tasks in the order papers print them, each with the names it goes by
/// (this project's suites and reference CSV use the first; the others are the task folder
/// names of the common VTAB-1k copies and the names papers print).
const TASKS: [(&[&str], &str); 19] = [
    (&["cifar100", "cifar", "cifar_100"], NATURAL),
    (&["caltech101", "caltech"], NATURAL),
    (&["dtd"], NATURAL),
    (
        &[
            "oxford_flowers102",
            "flowers102",
            "flowers",
            "oxford_flowers",
        ],
        NATURAL,
    ),
    (&["oxford_iiit_pet", "pets", "pet", "oxford_pets"], NATURAL),
    (&["svhn"], NATURAL),
    (&["sun397", "sun"], NATURAL),
    (&["patch_camelyon", "camelyon", "pcam"], SPECIALIZED),
    (&["eurosat"], SPECIALIZED),
    (&["resisc45", "resisc"], SPECIALIZED),
    (&["diabetic_retinopathy", "retinopathy"], SPECIALIZED),
    (&["clevr_count", "clevr_counting"], STRUCTURED),
    (&["clevr_dist", "clevr_distance"], STRUCTURED),
    (&["dmlab"], STRUCTURED),
    (&["kitti", "kitti_dist", "kitti_distance"], STRUCTURED),
    (&["dsprites_loc", "dsprites_location"], STRUCTURED),
    (&["dsprites_ori", "dsprites_orientation"], STRUCTURED),
    (&["smallnorb_azi", "smallnorb_azimuth"], STRUCTURED),
    (&["smallnorb_ele", "smallnorb_elevation"], STRUCTURED),
];

/// Lower case, `-`, `.` and spaces as `_`: `Clevr-Count` is `clevr_count`.
fn normal(name: &str) -> String {
    name.trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if "-. ".contains(c) { '_' } else { c })
        .collect()
}

/// The position of a VTAB-1k task (by any of its names) in the papers' column order.
pub fn task_rank(name: &str) -> Option<usize> {
    let n = normal(name);
    TASKS
        .iter()
        .position(|(names, _)| names.iter().any(|x| *x == n))
}

/// The fixed group of a VTAB-1k task, by any of its names; `None` for any other name.
pub fn vtab1k_group(name: &str) -> Option<&'static str> {
    task_rank(name).map(|i| TASKS[i].1)
}

/// The order of groups: natural, specialized, structured, then groups of one's own by name,
/// then `other`.
pub fn group_rank(group: &str) -> (usize, &str) {
    match group {
        NATURAL => (0, ""),
        SPECIALIZED => (1, ""),
        STRUCTURED => (2, ""),
        OTHER => (4, ""),
        g => (3, g),
    }
}

/// A group's name as a column header: `Natural`, `Specialized`, `Structured`, or as given.
pub fn group_title(group: &str) -> String {
    let mut c = group.chars();
    match c.next() {
        Some(f) if [NATURAL, SPECIALIZED, STRUCTURED, OTHER].contains(&group) => {
            f.to_ascii_uppercase().to_string() + c.as_str()
        }
        _ => group.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every dataset of the shipped VTAB-1k suites has its paper group, 7 + 4 + 8.
    #[test]
    fn the_19_tasks_of_the_shipped_suites_have_their_groups() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../suites/vtab1k-all.toml"),
        )
        .unwrap();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("[datasets.")?.split(']').next())
            .collect();
        assert_eq!(names.len(), 19);
        let count = |g: &str| names.iter().filter(|n| vtab1k_group(n) == Some(g)).count();
        assert_eq!(
            (count(NATURAL), count(SPECIALIZED), count(STRUCTURED)),
            (7, 4, 8)
        );
        // In the papers' order, as the suite lists them.
        let ranks: Vec<usize> = names.iter().map(|n| task_rank(n).unwrap()).collect();
        assert_eq!(ranks, (0..19).collect::<Vec<_>>());
        // Other spellings of the same tasks; anything else has no group.
        assert_eq!(vtab1k_group("cifar"), Some(NATURAL));
        assert_eq!(vtab1k_group("Clevr-Count"), Some(STRUCTURED));
        assert_eq!(vtab1k_group("patch_camelyon"), Some(SPECIALIZED));
        assert_eq!(vtab1k_group("shape"), None);
        assert!(group_rank(STRUCTURED) < group_rank("medical"));
        assert!(group_rank("medical") < group_rank(OTHER));
        assert_eq!(group_title(SPECIALIZED), "Specialized");
        assert_eq!(group_title("medical"), "medical");
    }
}
