"""The studies: the budget and strategy studies (plan, run, statistics, report) and the reproduction study."""
