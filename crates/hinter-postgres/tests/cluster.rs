//! Runs the cluster conformance suite (`hinter-store-tests`) against PostgreSQL: every test
//! gets a fresh schema in the database named by `HINTER_TEST_DATABASE_URL`.

mod common;

#[cfg(hinter_test_database)]
hinter_store_tests::cluster_conformance_suite!(common::fresh_cluster);

#[cfg(not(hinter_test_database))]
#[test]
fn cluster_suite_needs_a_database() {
    common::no_database("cluster conformance tests");
}
