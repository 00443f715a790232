//! Namespaced objects of one kind, stored by namespace and then by name: what
//! [`super::Snapshot`] keeps its pods and policies in.
//!
//! Each namespace's objects sit behind one `Arc`. Copying the map (the Kubernetes source
//! publishes a copy of the snapshot after every batch of watch events) costs one reference
//! count per namespace instead of a key and a reference count per object, and a change after
//! the copy copies only its own namespace's name map.
//!
//! Each namespace also gets a label index, built on the first selector lookup that can use it
//! and dropped by any change to that namespace, so it can never disagree with the objects;
//! namespaces a change did not touch keep theirs across snapshot copies. Even small namespaces
//! are indexed: a cluster-wide selector (`namespaceSelector: {}` with a pod selector) asks
//! every namespace, and at 10,000 pods testing each pod's labels costs milliseconds of cache
//! misses where one index lookup per namespace costs microseconds. It owns storage and lookup
//! only: what a selector means is [`Selector::matches`], which decides every result (the index
//! only narrows the candidates).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use super::{Labels, ObjectKey};
use crate::model::{Operator, Selector};

/// A namespaced object.
pub(crate) trait Keyed {
    /// The object's `namespace/name`.
    fn key(&self) -> &ObjectKey;
}

/// An object a label selector can pick.
pub(crate) trait Labelled {
    /// The object's labels.
    fn labels(&self) -> &Labels;
}

/// Objects by namespace, then by name. Namespaces without objects are not kept.
pub(crate) struct NamespacedMap<T> {
    namespaces: BTreeMap<String, Arc<Objects<T>>>,
}

/// The objects of one namespace.
struct Objects<T> {
    by_name: BTreeMap<String, Arc<T>>,
    /// Built on the first selector lookup; reset by every change.
    labels: OnceLock<LabelIndex<T>>,
}

/// The objects of one namespace in name order, and for each label key and value the positions
/// (in that order) of the objects that carry it.
struct LabelIndex<T> {
    ordered: Vec<Arc<T>>,
    postings: BTreeMap<String, BTreeMap<String, Vec<u32>>>,
}

impl<T> Default for NamespacedMap<T> {
    fn default() -> Self {
        Self {
            namespaces: BTreeMap::new(),
        }
    }
}

// Not derived: a derive would require `T: Clone`, and only the `Arc`s are copied.
impl<T> Clone for NamespacedMap<T> {
    fn clone(&self) -> Self {
        Self {
            namespaces: self.namespaces.clone(),
        }
    }
}

impl<T> Clone for Objects<T> {
    /// A copy is made only to be changed (`Arc::make_mut`), which would drop the index at
    /// once: so it starts without one.
    fn clone(&self) -> Self {
        Self {
            by_name: self.by_name.clone(),
            labels: OnceLock::new(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for NamespacedMap<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.namespaces
                    .iter()
                    .map(|(namespace, objects)| (namespace, &objects.by_name)),
            )
            .finish()
    }
}

impl<T: Keyed> NamespacedMap<T> {
    /// Adds or replaces an object, under its key.
    pub(crate) fn insert(&mut self, object: T) {
        let object = Arc::new(object);
        let ObjectKey { namespace, name } = object.key();
        let objects = match self.namespaces.get_mut(namespace.as_str()) {
            Some(objects) => objects,
            None => self.namespaces.entry(namespace.clone()).or_insert_with(|| {
                Arc::new(Objects {
                    by_name: BTreeMap::new(),
                    labels: OnceLock::new(),
                })
            }),
        };
        let objects = Arc::make_mut(objects);
        objects.by_name.insert(name.clone(), Arc::clone(&object));
        objects.labels = OnceLock::new();
    }
}

impl<T> NamespacedMap<T> {
    /// Removes an object, returning it.
    pub(crate) fn remove(&mut self, namespace: &str, name: &str) -> Option<Arc<T>> {
        let objects = self.namespaces.get_mut(namespace)?;
        // Look before `make_mut`: removing nothing must not copy a shared namespace.
        if !objects.by_name.contains_key(name) {
            return None;
        }
        let objects = Arc::make_mut(objects);
        let removed = objects.by_name.remove(name);
        objects.labels = OnceLock::new();
        if objects.by_name.is_empty() {
            self.namespaces.remove(namespace);
        }
        removed
    }

    /// An object by namespace and name.
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<&T> {
        self.namespaces
            .get(namespace)?
            .by_name
            .get(name)
            .map(|o| &**o)
    }

    /// Every object, ordered by namespace then name.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.namespaces
            .values()
            .flat_map(|objects| objects.by_name.values().map(|o| &**o))
    }

    /// The objects of one namespace, ordered by name.
    pub(crate) fn iter_in<'a>(
        &'a self,
        namespace: &str,
    ) -> impl Iterator<Item = &'a T> + use<'a, T> {
        self.namespaces
            .get(namespace)
            .into_iter()
            .flat_map(|objects| objects.by_name.values().map(|o| &**o))
    }

    /// The namespaces that hold at least one object, in order.
    pub(crate) fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.keys().map(String::as_str)
    }
}

impl<T: Labelled> NamespacedMap<T> {
    /// The objects of one namespace whose labels the selector matches, ordered by name.
    pub(crate) fn selected(&self, namespace: &str, selector: &Selector) -> Vec<&T> {
        let Some(objects) = self.namespaces.get(namespace) else {
            return Vec::new();
        };
        let indexable = !selector.match_labels.is_empty()
            || selector
                .expressions
                .iter()
                .any(|r| matches!(r.operator, Operator::In(_)));
        if !indexable {
            return objects.scan(selector);
        }
        let index = objects
            .labels
            .get_or_init(|| LabelIndex::build(&objects.by_name));
        match index.candidates(selector) {
            Some(positions) => positions
                .into_iter()
                .filter_map(|i| index.ordered.get(i as usize))
                .map(|o| &**o)
                .filter(|o| selector.matches(o.labels()))
                .collect(),
            None => objects.scan(selector), // not reached: the selector is indexable
        }
    }
}

impl<T: Labelled> Objects<T> {
    /// Every object, in name order, tested against the selector.
    fn scan(&self, selector: &Selector) -> Vec<&T> {
        self.by_name
            .values()
            .map(|o| &**o)
            .filter(|o| selector.matches(o.labels()))
            .collect()
    }
}

impl<T: Labelled> LabelIndex<T> {
    fn build(by_name: &BTreeMap<String, Arc<T>>) -> Self {
        let ordered: Vec<Arc<T>> = by_name.values().cloned().collect();
        let mut postings: BTreeMap<String, BTreeMap<String, Vec<u32>>> = BTreeMap::new();
        for (position, object) in ordered.iter().enumerate() {
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            for (key, value) in object.labels() {
                let values = match postings.get_mut(key.as_str()) {
                    Some(values) => values,
                    None => postings.entry(key.clone()).or_default(),
                };
                match values.get_mut(value.as_str()) {
                    Some(list) => list.push(position),
                    None => {
                        values.insert(value.clone(), vec![position]);
                    }
                }
            }
        }
        Self { ordered, postings }
    }

    /// The positions, in order, of the objects that can match: those carrying one of the
    /// selector's `matchLabels` pairs or one of an `In` requirement's values, whichever list
    /// is shortest. `None` when the selector has neither (every object is a candidate).
    fn candidates(&self, selector: &Selector) -> Option<Vec<u32>> {
        let with = |key: &str, value: &str| -> &[u32] {
            self.postings
                .get(key)
                .and_then(|values| values.get(value))
                .map_or(&[], Vec::as_slice)
        };
        let mut best: Option<&[u32]> = None;
        for (key, value) in &selector.match_labels {
            let list = with(key, value);
            if best.is_none_or(|b| list.len() < b.len()) {
                best = Some(list);
            }
        }
        let mut best_union: Option<Vec<u32>> = None;
        for requirement in &selector.expressions {
            let Operator::In(values) = &requirement.operator else {
                continue;
            };
            let lists: Vec<&[u32]> = values.iter().map(|v| with(&requirement.key, v)).collect();
            let total: usize = lists.iter().map(|l| l.len()).sum();
            let shortest = best_union
                .as_ref()
                .map(Vec::len)
                .into_iter()
                .chain(best.map(<[u32]>::len))
                .min();
            if shortest.is_none_or(|len| total < len) {
                let mut union: Vec<u32> = lists.concat();
                // An object has one value per key, so the lists are disjoint: sorting is enough.
                union.sort_unstable();
                best_union = Some(union);
                best = None;
            }
        }
        best_union.or_else(|| best.map(<[u32]>::to_vec))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    use crate::model::{
        Labels, Namespace, ObjectKey, Operator, Pod, Requirement, Selector, Snapshot,
    };

    use kube_nftpol_test_support::rng::Rng;

    const NAMESPACES: [&str; 4] = ["a", "b", "c", "d"];
    const APPS: [&str; 4] = ["web", "db", "cache", "job"];

    fn labels(rng: &mut Rng) -> Labels {
        let mut labels = Labels::new();
        if !rng.one_in(8) {
            labels.insert("app".into(), (*rng.pick(&APPS)).into());
        }
        if rng.chance(40) {
            labels.insert("tier".into(), (*rng.pick(&["front", "back"])).into());
        }
        if rng.chance(30) {
            labels.insert("hash".into(), format!("h{}", rng.below(50)));
        }
        labels
    }

    fn random_pod(rng: &mut Rng) -> Pod {
        let namespace = *rng.pick(&NAMESPACES);
        let name = format!("p{}", rng.below(120));
        let ip: IpAddr = format!("10.0.{}.{}", rng.below(4), rng.below(250))
            .parse()
            .unwrap();
        Pod::running(ObjectKey::new(namespace, name), labels(rng), "n1", [ip])
    }

    fn set(values: &[&str]) -> std::collections::BTreeSet<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    /// Selectors of every shape: indexable (`matchLabels`, `In`) or not, alone and mixed.
    fn selectors() -> Vec<Selector> {
        let requirement = |key: &str, operator| Requirement {
            key: key.into(),
            operator,
        };
        let match_labels = |pairs: &[(&str, &str)]| Selector {
            match_labels: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            expressions: Vec::new(),
        };
        let mut selectors = vec![
            Selector::everything(),
            match_labels(&[("app", "web")]),
            match_labels(&[("app", "nothing")]),
            match_labels(&[("app", "db"), ("tier", "back")]),
            match_labels(&[("hash", "h3")]),
            match_labels(&[("missing", "x")]),
        ];
        let expressions = [
            requirement("app", Operator::In(set(&["web", "cache"]))),
            requirement("app", Operator::In(set(&["nothing"]))),
            requirement("tier", Operator::In(set(&["front", "back"]))),
            requirement("app", Operator::NotIn(set(&["web"]))),
            requirement("tier", Operator::Exists),
            requirement("hash", Operator::DoesNotExist),
        ];
        for (i, expression) in expressions.iter().enumerate() {
            selectors.push(Selector {
                match_labels: BTreeMap::new(),
                expressions: vec![expression.clone()],
            });
            let mut mixed = match_labels(&[("app", APPS[i % APPS.len()])]);
            mixed.expressions = vec![expression.clone(), expressions[(i + 2) % 6].clone()];
            selectors.push(mixed);
        }
        selectors
    }

    /// `pods_selected` against the plain scan, for every namespace and selector; the labels
    /// `pod_namespaces_with_labels` walks to against the lookup of each.
    fn check(snapshot: &Snapshot, what: &str) {
        let walked: Vec<_> = snapshot.pod_namespaces_with_labels().collect();
        let looked_up: Vec<_> = snapshot
            .pod_namespaces()
            .map(|name| (name, snapshot.namespace_labels(name)))
            .collect();
        assert_eq!(walked, looked_up, "{what}");
        for namespace in NAMESPACES {
            for selector in selectors() {
                let indexed: Vec<&ObjectKey> = snapshot
                    .pods_selected(namespace, &selector)
                    .into_iter()
                    .map(|p| &p.key)
                    .collect();
                let scanned: Vec<&ObjectKey> = snapshot
                    .pods_in(namespace)
                    .filter(|p| selector.matches(&p.labels))
                    .map(|p| &p.key)
                    .collect();
                assert_eq!(indexed, scanned, "{what}: {namespace} {selector}");
            }
        }
    }

    #[test]
    fn indexed_selection_equals_the_plain_scan_through_random_changes_and_copies() {
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut snapshot = Snapshot::new();
            // The model of record: every pod by key.
            let mut expected: BTreeMap<ObjectKey, Pod> = BTreeMap::new();
            // Copies taken along the way, with what they held then: later changes to the
            // original must not reach them (nor their indexes).
            let mut copies: Vec<(Snapshot, BTreeMap<ObjectKey, Pod>)> = Vec::new();
            for step in 0..400 {
                match rng.below(10) {
                    0..=5 => {
                        let pod = random_pod(&mut rng);
                        expected.insert(pod.key.clone(), pod.clone());
                        snapshot.upsert_pod(pod);
                    }
                    6 | 7 => {
                        let key =
                            ObjectKey::new(*rng.pick(&NAMESPACES), format!("p{}", rng.below(120)));
                        assert_eq!(
                            snapshot.remove_pod(&key).map(|p| p.key),
                            expected.remove(&key).map(|p| p.key)
                        );
                    }
                    8 => {
                        let name = *rng.pick(&NAMESPACES);
                        snapshot.upsert_namespace(Namespace::new(name, labels(&mut rng)));
                    }
                    _ => {
                        let name = *rng.pick(&NAMESPACES);
                        snapshot.remove_namespace(name);
                    }
                }
                if step % 25 == 0 {
                    // Build the indexes before copying, so copies share them.
                    check(&snapshot, &format!("seed {seed} step {step}"));
                    copies.push((snapshot.clone(), expected.clone()));
                }
                let pods: Vec<&Pod> = snapshot.pods().collect();
                assert_eq!(pods, expected.values().collect::<Vec<_>>(), "seed {seed}");
            }
            check(&snapshot, &format!("seed {seed} end"));
            for (i, (copy, held)) in copies.iter().enumerate() {
                let pods: Vec<&Pod> = copy.pods().collect();
                assert_eq!(
                    pods,
                    held.values().collect::<Vec<_>>(),
                    "seed {seed} copy {i}"
                );
                check(copy, &format!("seed {seed} copy {i}"));
            }
        }
    }

    #[test]
    fn a_namespace_loses_its_pod_storage_with_its_last_pod_and_keeps_it_without_its_object() {
        let mut snapshot = Snapshot::new();
        let pod =
            |ns: &str, name: &str| Pod::running(ObjectKey::new(ns, name), Labels::new(), "n1", []);
        snapshot.upsert_pod(pod("b", "x"));
        snapshot.upsert_pod(pod("a", "y"));
        snapshot.upsert_pod(pod("a", "x"));
        assert_eq!(snapshot.pod_namespaces().collect::<Vec<_>>(), ["a", "b"]);
        snapshot.remove_namespace("a");
        assert_eq!(snapshot.pod_namespaces().collect::<Vec<_>>(), ["a", "b"]);
        snapshot.remove_pod(&ObjectKey::new("b", "x"));
        assert_eq!(snapshot.pod_namespaces().collect::<Vec<_>>(), ["a"]);
        assert!(snapshot.pods_in("b").next().is_none());
        assert!(snapshot.pod(&ObjectKey::new("b", "x")).is_none());
        assert_eq!(snapshot.namespace("b").map(|n| n.name.as_str()), Some("b"));
    }
}
