"""The institution side: verification SDK and CLI, joint-modeling and scoring client."""
