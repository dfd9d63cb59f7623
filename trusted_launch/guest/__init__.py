"""The in-guest agent that proves to the tenant that this VM knows N (step 15)."""
