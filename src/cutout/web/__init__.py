"""The seed's pages and endpoints: HTML for people, JSON for programs, one set of rules."""
