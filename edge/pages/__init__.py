"""Pages for people: the growth team's dashboard (with its charts) and the demo shop."""
