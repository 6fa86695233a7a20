//! Without the local environment, an integration test fails, telling the reader to run `make env-up`;
//! it never passes silently.

#[tokio::test]
#[should_panic(expected = "Run `make env-up`")]
async fn a_test_fails_when_the_environment_is_not_up() {
    let empty = std::env::temp_dir().join("millrace-env-that-does-not-exist");
    // SAFETY: this is the only test in this binary, so no other thread reads the environment meanwhile.
    unsafe { std::env::set_var("MILLRACE_HOME", &empty) };
    millrace_testkit::TestNamespace::create("not-up").await;
}
