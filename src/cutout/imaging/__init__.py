"""Imaging: decode untrusted bytes, bring masks to full size, compose and encode outputs."""
