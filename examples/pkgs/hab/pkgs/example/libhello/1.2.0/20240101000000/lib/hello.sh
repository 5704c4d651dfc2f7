# Shell library sourced by example/hello.
hello_greeting() {
  cat /hab/pkgs/example/greeting-data/1.0.0/20240101000000/share/greeting.txt
}
