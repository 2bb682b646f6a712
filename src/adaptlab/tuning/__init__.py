"""The training layer every trainer uses: settings, family adapters, strategies and the strategy-aware Trainer."""
